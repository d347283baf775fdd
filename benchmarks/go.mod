module github.com/weftmesh/weft/benchmarks

go 1.26.0

replace github.com/weftmesh/weft => ../
