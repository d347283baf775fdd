module github.com/weftmesh/weft/benchmarks

go 1.26.0

replace github.com/weftmesh/weft => ../

require (
	github.com/spiffe/go-spiffe/v2 v2.9.0
	github.com/weftmesh/weft v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260928230214-8a89bd6388cc // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
