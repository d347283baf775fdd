// Command benchtable reads `go test -bench` output (several rounds of the
// same benchmarks) and prints the median of every measurement with the
// ratios the weft benchmarks are judged by, each against a baseline
// measured in the same run:
//
//   - path benchmarks (sub-benchmarks keyed mode= and path=): time and
//     CPU per op against bare mutual TLS (path=mtls), allocations and
//     bytes beyond it, time against the two-proxy path (path=haproxy-2hop),
//     and the CPU a path adds over plaintext (path=plain) as a share of
//     what the two proxies add;
//
//   - the tail benchmark (keyed slow=): p99 against the same policy with
//     every server healthy (slow=none);
//
//   - every other benchmark: its medians.
//
//     benchtable results.txt...
//     go test -bench . | benchtable
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"golang.org/x/perf/benchfmt"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// row is one benchmark (its full name without GOMAXPROCS): its
// configuration and every sample of every unit.
type row struct {
	base    string
	keys    map[string]string
	order   []string // sub-benchmark parts, in order, for display
	samples map[string][]float64
}

func (r *row) median(unit string) (float64, bool) {
	v := slices.Clone(r.samples[unit])
	if len(v) == 0 {
		return 0, false
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func (r *row) n() int {
	n := 0
	for _, v := range r.samples {
		n = max(n, len(v))
	}
	return n
}

func run(args []string, stdin io.Reader, out io.Writer) error {
	var rows []*row
	byName := map[string]*row{}
	read := func(r io.Reader, name string) error {
		br := benchfmt.NewReader(r, name)
		for br.Scan() {
			res, ok := br.Result().(*benchfmt.Result)
			if !ok {
				continue
			}
			baseB, parts := res.Name.Parts()
			rw := &row{base: string(baseB), keys: map[string]string{}, samples: map[string][]float64{}}
			var full strings.Builder
			full.WriteString(rw.base)
			for _, p := range parts {
				ps := string(p)
				if strings.HasPrefix(ps, "-") {
					continue // GOMAXPROCS
				}
				full.WriteString(ps)
				ps = strings.TrimPrefix(ps, "/")
				rw.order = append(rw.order, ps)
				if k, v, ok := strings.Cut(ps, "="); ok {
					rw.keys[k] = v
				}
			}
			if old := byName[full.String()]; old != nil {
				rw = old
			} else {
				byName[full.String()] = rw
				rows = append(rows, rw)
			}
			for _, v := range res.Values {
				// Keep the units as the benchmarks wrote them (ns/op,
				// cpu-ns/op), not tidied to seconds.
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				rw.samples[unit] = append(rw.samples[unit], val)
			}
		}
		return br.Err()
	}
	if len(args) == 0 {
		if err := read(stdin, "stdin"); err != nil {
			return err
		}
	}
	for _, a := range args {
		f, err := os.Open(a)
		if err != nil {
			return err
		}
		err = read(bufio.NewReader(f), a)
		f.Close()
		if err != nil {
			return err
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("no benchmark results")
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	defer w.Flush()

	// Group rows by base name and, for path benchmarks, mode.
	type group struct {
		title string
		rows  []*row
	}
	var groups []*group
	byGroup := map[string]*group{}
	for _, r := range rows {
		title := r.base
		if m, ok := r.keys["mode"]; ok && r.keys["path"] != "" {
			title += " mode=" + m
		}
		g := byGroup[title]
		if g == nil {
			g = &group{title: title}
			byGroup[title] = g
			groups = append(groups, g)
		}
		g.rows = append(g.rows, r)
	}
	for _, g := range groups {
		switch {
		case g.rows[0].keys["path"] != "":
			pathTable(w, g.title, g.rows)
		case g.rows[0].keys["slow"] != "":
			tailTable(w, g.title, g.rows)
		default:
			plainTable(w, g.title, g.rows)
		}
		w.Flush()
	}
	return nil
}

func find(rows []*row, match func(*row) bool) *row {
	for _, r := range rows {
		if match(r) {
			return r
		}
	}
	return nil
}

func cell(v float64, ok bool, format string) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func ratio(r, base *row, unit string) string {
	if base == nil {
		return "-"
	}
	a, ok1 := r.median(unit)
	b, ok2 := base.median(unit)
	if !ok1 || !ok2 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func delta(r, base *row, unit string) string {
	if base == nil {
		return "-"
	}
	a, ok1 := r.median(unit)
	b, ok2 := base.median(unit)
	if !ok1 || !ok2 {
		return "-"
	}
	return fmt.Sprintf("%+.0f", a-b)
}

// pathTable prints one mode of a path benchmark.
func pathTable(w io.Writer, title string, rows []*row) {
	byPath := func(p string) *row { return find(rows, func(r *row) bool { return r.keys["path"] == p }) }
	mtls, plain, twoHop := byPath("mtls"), byPath("plain"), byPath("haproxy-2hop")
	fmt.Fprintf(w, "\n%s (medians of n runs)\n", title)
	fmt.Fprintln(w, "path\tn\tns/op\tcpu-ns/op\tB/op\tallocs/op\ttime/mtls\tcpu/mtls\tallocs-mtls\tB-mtls\ttime/2hop\tadded-cpu/2hop's\t")
	for _, r := range rows {
		ns, ok1 := r.median("ns/op")
		cpu, ok2 := r.median("cpu-ns/op")
		b, ok3 := r.median("B/op")
		al, ok4 := r.median("allocs/op")
		added := "-"
		if plain != nil && twoHop != nil {
			c, okc := r.median("cpu-ns/op")
			p, okp := plain.median("cpu-ns/op")
			t, okt := twoHop.median("cpu-ns/op")
			if okc && okp && okt && t > p {
				added = fmt.Sprintf("%.0f%%", 100*(c-p)/(t-p))
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.keys["path"], r.n(),
			cell(ns, ok1, "%.0f"), cell(cpu, ok2, "%.0f"), cell(b, ok3, "%.0f"), cell(al, ok4, "%.0f"),
			ratio(r, mtls, "ns/op"), ratio(r, mtls, "cpu-ns/op"), delta(r, mtls, "allocs/op"), delta(r, mtls, "B/op"),
			ratio(r, twoHop, "ns/op"), added)
	}
}

// tailTable prints the tail-latency benchmark: p50, p99, the slow
// server's share, and p99 against the all-healthy run of the same policy.
func tailTable(w io.Writer, title string, rows []*row) {
	fmt.Fprintf(w, "\n%s (medians of n runs)\n", title)
	fmt.Fprintln(w, "policy\tslow\tn\tp50-ms\tp99-ms\tslow-share\tp99/healthy\t")
	for _, r := range rows {
		healthy := find(rows, func(h *row) bool { return h.keys["policy"] == r.keys["policy"] && h.keys["slow"] == "none" })
		p50, ok1 := r.median("p50-ms")
		p99, ok2 := r.median("p99-ms")
		share, ok3 := r.median("slow-share")
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.keys["policy"], r.keys["slow"], r.n(),
			cell(p50, ok1, "%.2f"), cell(p99, ok2, "%.2f"), cell(100*share, ok3, "%.1f%%"), ratio(r, healthy, "p99-ms"))
	}
}

// plainTable prints the medians of every unit of a group.
func plainTable(w io.Writer, title string, rows []*row) {
	var units []string
	seen := map[string]bool{}
	for _, r := range rows {
		for u := range r.samples {
			if !seen[u] {
				seen[u] = true
				units = append(units, u)
			}
		}
	}
	rank := func(u string) int {
		switch u {
		case "ns/op":
			return 0
		case "B/op":
			return 2
		case "allocs/op":
			return 3
		}
		return 1
	}
	sort.SliceStable(units, func(i, j int) bool {
		if rank(units[i]) != rank(units[j]) {
			return rank(units[i]) < rank(units[j])
		}
		return units[i] < units[j]
	})
	fmt.Fprintf(w, "\n%s (medians of n runs)\n", title)
	fmt.Fprint(w, "benchmark\tn\t")
	for _, u := range units {
		fmt.Fprint(w, u+"\t")
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		name := strings.Join(r.order, "/")
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(w, "%s\t%d\t", name, r.n())
		for _, u := range units {
			v, ok := r.median(u)
			fmt.Fprint(w, cell(v, ok, "%.4g")+"\t")
		}
		fmt.Fprintln(w)
	}
}
