package breaker

import (
	"strings"
	"testing"
)

// FuzzParsePriority: only "critical", in any case, is critical.
func FuzzParsePriority(f *testing.F) {
	for _, s := range []string{"critical", "CRITICAL", "sheddable", "", "critica", "criticall", "crıtical"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := Sheddable
		if len(s) == len("critical") && strings.ToLower(s) == "critical" {
			want = Critical
		}
		if got := ParsePriority(s); got != want {
			t.Fatalf("%q: %v, want %v", s, got, want)
		}
	})
}
