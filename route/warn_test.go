package route_test

import (
	"slices"
	"testing"

	"github.com/weftmesh/weft/route"
)

// TestOnWarningOnce: each warning is reported once while it stays from
// table to table, and again when it comes back after going away.
func TestOnWarningOnce(t *testing.T) {
	var got []string
	shadow := base + `
      - backends: [{subset: v2}]
      - match: [{path: {prefix: /a}}]`
	mirror := base + `
      - mirror: {subset: v2}`
	src, err := route.NewStatic(mustParse(t, shadow), route.WithOnWarning(func(source string, w *route.FieldError) {
		got = append(got, source+" "+w.Path)
	}))
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		yaml string
		want []string // reported by this update
	}{
		{shadow, nil},
		{base + "      - timeout: 1s", nil},
		{mirror, []string{"static services.payments.routes[0].mirror.percent"}},
		{mirror, nil},
		{shadow, []string{"static services.payments.routes[1]"}},
	}
	if want := []string{"static services.payments.routes[1]"}; !slices.Equal(got, want) {
		t.Fatalf("first table reported %q, want %q", got, want)
	}
	for i, s := range steps {
		got = nil
		if err := src.Update(mustParse(t, s.yaml)); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("update %d reported %q, want %q", i, got, s.want)
		}
	}
}
