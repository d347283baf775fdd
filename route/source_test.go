package route_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/route"
)

const goodV1 = `
services:
  web:
    subsets: {v1: {tags: [v1]}, v2: {tags: [v2]}}
    defaultSubset: v1
`

const goodV2 = `
services:
  web:
    subsets: {v1: {tags: [v1]}, v2: {tags: [v2]}}
    defaultSubset: v2
`

// defaultSubset is the subset the catch-all of web goes to in tab.
func defaultSubset(tab *route.Table) string {
	d := tab.Match("web", &route.Request{Method: "GET", Path: "/"}, 0)
	if d.Target == nil {
		return "<none>"
	}
	return d.Target.Destination.Subset
}

// recorder keeps what a source reported to its hooks.
type recorder struct {
	mu       sync.Mutex
	updates  []*route.Table
	rejected []route.Rejection
}

func (r *recorder) options() []route.Option {
	return []route.Option{
		route.WithOnUpdate(func(t *route.Table) { r.mu.Lock(); r.updates = append(r.updates, t); r.mu.Unlock() }),
		route.WithOnReject(func(rj route.Rejection) { r.mu.Lock(); r.rejected = append(r.rejected, rj); r.mu.Unlock() }),
	}
}

func (r *recorder) counts() (updates, rejected int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates), len(r.rejected)
}

func TestStaticKeepsTheLastGoodTable(t *testing.T) {
	defer goleak.VerifyNone(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := &recorder{}
	src, err := route.NewStatic(mustParse(t, goodV1), append(rec.options(), route.WithClock(func() time.Time { return now }), route.WithVersion("first"))...)
	if err != nil {
		t.Fatal(err)
	}
	first := src.Table()
	if defaultSubset(first) != "v1" || first.Version() != "first" || first.Source() != "static" {
		t.Fatalf("first table: %s %q %q", defaultSubset(first), first.Version(), first.Source())
	}

	bad := mustParse(t, goodV2+`    routes: [{backends: [{subset: v9}]}]`)
	err = src.Update(bad)
	var rj route.Rejection
	var ve *route.ValidationError
	if !errors.As(err, &rj) || !errors.As(err, &ve) || ve.Errors[0].Path != "services.web.routes[0].backends[0].subset" {
		t.Fatalf("update error %v", err)
	}
	if src.Table() != first {
		t.Fatal("an invalid update changed the table")
	}
	st := src.Status()
	if st.Rejected != 1 || st.LastRejection == nil || !st.LastRejection.At.Equal(now) || st.LastRejection.Source != "static" || st.Table != first {
		t.Fatalf("status %+v", st)
	}

	if err := src.Update(mustParse(t, goodV2)); err != nil {
		t.Fatal(err)
	}
	if defaultSubset(src.Table()) != "v2" {
		t.Fatal("a good update was not applied")
	}
	if u, r := rec.counts(); u != 2 || r != 1 {
		t.Fatalf("hooks saw %d updates and %d rejections, want 2 and 1", u, r)
	}
	// Hooks may read the source they are called from.
	var seen uint64
	var reader *route.Static
	reader, err = route.NewStatic(mustParse(t, goodV1), route.WithOnReject(func(route.Rejection) {
		seen = reader.Status().Rejected
	}))
	if err != nil {
		t.Fatal(err)
	}
	if reader.Update(bad) == nil || seen != 1 {
		t.Fatalf("the rejection hook read %d rejections, want 1", seen)
	}
	if _, err := route.NewStatic(bad); !errors.As(err, &ve) {
		t.Fatalf("NewStatic of an invalid config: %v", err)
	}
}

// TestStaticConcurrentReaders swaps tables while readers match: every
// reader sees a whole table, never a mix (run with -race).
func TestStaticConcurrentReaders(t *testing.T) {
	defer goleak.VerifyNone(t)
	src, err := route.NewStatic(mustParse(t, goodV1))
	if err != nil {
		t.Fatal(err)
	}
	cfgs := []*route.Config{mustParse(t, goodV1), mustParse(t, goodV2)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if s := defaultSubset(src.Table()); s != "v1" && s != "v2" {
					t.Errorf("subset %q", s)
					return
				}
			}
		}()
	}
	for i := range 200 {
		if err := src.Update(cfgs[i%2]); err != nil {
			t.Error(err)
		}
	}
	cancel()
	wg.Wait()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFile(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, path, goodV1)
	rec := &recorder{}
	f, err := route.NewFile(path, rec.options()...)
	if err != nil {
		t.Fatal(err)
	}
	first := f.Table()
	if defaultSubset(first) != "v1" || first.Source() != "file:"+path {
		t.Fatalf("first table %s from %q", defaultSubset(first), first.Source())
	}

	steps := []struct {
		name    string
		content string // written before the poll; "" writes nothing
		want    string // default subset after the poll
		err     bool   // the poll reports a rejection
	}{
		{"unchanged", "", "v1", false},
		// Cut after the subsets: a valid config of its own, but not yet
		// the file's final content.
		{"half-written", goodV2[:len(goodV2)-len("    defaultSubset: v2\n")], "v1", false},
		{"complete, first read", goodV2, "v1", false},
		{"complete, read again", "", "v2", false},
		{"invalid, first read", goodV1 + "    routes: [{timeout: -1s}]\n", "v2", false},
		{"invalid, read again", "", "v2", true},
		{"invalid, still", "", "v2", true},
		{"not YAML, first read", "services: [", "v2", false},
		{"not YAML, read again", "", "v2", true},
		{"empty, first read", " ", "v2", false},
		{"empty, read again", "", "v2", true},
		{"fixed, first read", goodV1, "v2", false},
		{"fixed, read again", "", "v1", false},
	}
	for _, s := range steps {
		if s.content != "" {
			writeFile(t, path, s.content)
		}
		err := f.Poll()
		if got := defaultSubset(f.Table()); got != s.want {
			t.Fatalf("%s: default subset %s, want %s", s.name, got, s.want)
		}
		if (err != nil) != s.err {
			t.Fatalf("%s: poll error %v", s.name, err)
		}
	}
	u, r := rec.counts()
	if u != 3 || r != 3 {
		t.Fatalf("hooks saw %d updates and %d rejections, want 3 and 3 (each bad content once)", u, r)
	}
	rec.mu.Lock()
	var ve *route.ValidationError
	if !errors.As(rec.rejected[0].Err, &ve) || ve.Errors[0].Path != "services.web.routes[0].timeout" {
		t.Errorf("first rejection %v", rec.rejected[0].Err)
	}
	if !errors.Is(rec.rejected[1].Err, route.ErrSyntax) || !errors.Is(rec.rejected[2].Err, route.ErrEmpty) {
		t.Errorf("rejections %v, %v", rec.rejected[1].Err, rec.rejected[2].Err)
	}
	rec.mu.Unlock()
	if st := f.Status(); st.Rejected != 3 || !errors.Is(st.LastRejection.Err, route.ErrEmpty) {
		t.Errorf("status %+v", st)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.Poll()
	if err := f.Poll(); !errors.Is(err, os.ErrNotExist) || defaultSubset(f.Table()) != "v1" {
		t.Fatalf("a removed file: %v, table %s", err, defaultSubset(f.Table()))
	}
}

func TestNewFileRefuses(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		want          error
	}{
		{"bad.json", `{"services": {"web": {"defaultSubset": "nope"}}}`, route.ErrInvalid},
		{"bad.yaml", "services: {web: {unknown: 1}}", route.ErrSyntax},
		{"empty.yml", "", route.ErrEmpty},
		{"missing.yaml", "-", os.ErrNotExist},
	} {
		path := filepath.Join(dir, tc.name)
		if tc.content != "-" {
			writeFile(t, path, tc.content)
		}
		if f, err := route.NewFile(path); f != nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestFileRun follows a file with Run's own polling: a change takes
// effect without a restart.
func TestFileRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "routes.json")
	writeFile(t, path, `{"services": {"web": {"subsets": {"v1": {"tags": ["v1"]}}, "defaultSubset": "v1"}}}`)
	f, err := route.NewFile(path, route.WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()

	tmp := path + ".tmp"
	writeFile(t, tmp, `{"services": {"web": {"subsets": {"v2": {"tags": ["v2"]}}, "defaultSubset": "v2"}}}`)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for defaultSubset(f.Table()) != "v2" {
		if time.Now().After(deadline) {
			t.Fatalf("the change was not applied within 20 s; status %+v", f.Status())
		}
		time.Sleep(5 * time.Millisecond) // polling the condition
	}
}
