package weft_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/weftmesh/weft/"

// allowedImports lists, for each library package, the other weft
// packages it may import. Arrows point down only: nothing imports mesh,
// and the packages below it share only small types.
var allowedImports = map[string][]string{
	"mesh":      {"balancer", "breaker", "discovery", "route", "telemetry", "tlsid"},
	"route":     {"discovery"},
	"balancer":  {"discovery"},
	"breaker":   {"discovery"},
	"discovery": {},
	"telemetry": {},
	"tlsid":     {},
}

// parseLibrary parses the non-test Go files of the library packages.
func parseLibrary(t *testing.T) map[string][]*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	files := map[string][]*ast.File{}
	for pkg := range allowedImports {
		err := filepath.WalkDir(pkg, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files[path] = append(files[path], f)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestImportsPointDown(t *testing.T) {
	for path, fs := range parseLibrary(t) {
		top := strings.Split(filepath.ToSlash(path), "/")[0]
		for _, f := range fs {
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if !strings.HasPrefix(p, module) {
					continue
				}
				target := strings.Split(strings.TrimPrefix(p, module), "/")[0]
				if target == top || target == "internal" {
					continue
				}
				ok := false
				for _, a := range allowedImports[top] {
					ok = ok || a == target
				}
				if !ok {
					t.Errorf("%s imports %s: %s may import only %v", path, p, top, allowedImports[top])
				}
			}
		}
	}
}

// TestNoInitRegistration: the library's only init functions are the gRPC
// balancer registration grpc-go requires and telemetry's internal hook.
func TestNoInitRegistration(t *testing.T) {
	// The init functions allowed, and why: grpc-go selects balancers by
	// a global name, and telemetry hands mesh its call recorders through
	// an internal hook (as grpc-go's internal package does), so that they
	// stay out of the public API. Neither registers anything by a name
	// users choose.
	allowed := map[string]bool{"mesh/grpc.go": true, "telemetry/telemetry.go": true}
	inits := 0
	for path, fs := range parseLibrary(t) {
		for _, f := range fs {
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Name.Name != "init" || fn.Recv != nil {
					continue
				}
				if !allowed[filepath.ToSlash(path)] {
					t.Errorf("%s has an init function", path)
				}
				inits++
			}
		}
	}
	if inits != len(allowed) {
		t.Errorf("found %d init functions, want exactly the %d allowed", inits, len(allowed))
	}
}
