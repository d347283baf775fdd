package mesh_test

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/route"
)

// A source built with ReportRouteRejections logs each update it refuses,
// with the path of every problem, and keeps its table.
func ExampleReportRouteRejections() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // a stable output
			}
			return a
		},
	}))
	good, _ := route.Parse([]byte(`services: {pay: {defaultSubset: v1, subsets: {v1: {tags: [v1]}}}}`), route.YAML)
	src, err := route.NewStatic(good, mesh.ReportRouteRejections(logger, nil))
	if err != nil {
		panic(err)
	}
	bad, _ := route.Parse([]byte(`services: {pay: {defaultSubset: v2, subsets: {v1: {tags: [v1]}}}}`), route.YAML)
	// The client would take src: mesh.NewClient(mesh.WithRoutes(src), ...).
	_ = src.Update(bad)
	fmt.Println("rejected:", src.Status().Rejected, "default subset:", src.Table().Config().Services["pay"].DefaultSubset)
	// Output:
	// level=WARN msg="mesh: route update refused; the previous table stays" source=static error="route: invalid config: services.pay.defaultSubset: unknown subset \"v2\" (subsets: v1)"
	// rejected: 1 default subset: v1
}
