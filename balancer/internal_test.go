package balancer

import (
	"testing"
	"unsafe"

	"github.com/weftmesh/weft/internal/leaktest"
)

func TestLoadLayout(t *testing.T) {
	leaktest.Check(t)
	if s := unsafe.Sizeof(Load{}); s != 128 {
		t.Errorf("Load is %d bytes, want 128 (hot fields in one cache line of a slab)", s)
	}
	if o := unsafe.Offsetof(Load{}.clk); o >= 64 {
		t.Errorf("the pick path's fields end at %d, past the first cache line", o)
	}
}

func TestNextPrime(t *testing.T) {
	leaktest.Check(t)
	for n, want := range map[int]int{0: 2, 2: 2, 3: 3, 4: 5, 1000: 1009, 65536: 65537, 65537: 65537} {
		if got := nextPrime(n); got != want {
			t.Errorf("nextPrime(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestDivider(t *testing.T) {
	leaktest.Check(t)
	xs := []uint32{0, 1, 2, 3, 7, 1000, 65535, 65536, 1<<31 - 1, 1 << 31, 1<<32 - 2, 1<<32 - 1}
	for _, n := range []int{1, 2, 3, 5, 7, 100, 1000, 10_000, 65537, 1<<31 - 1} {
		d := newDivider(n)
		for _, x := range xs {
			if got, want := d.mod(x), x%uint32(n); got != want {
				t.Fatalf("%d mod %d = %d, want %d", x, n, got, want)
			}
			if n >= 2 {
				if got, want := d.div(x), x/uint32(n); got != want {
					t.Fatalf("%d / %d = %d, want %d", x, n, got, want)
				}
			}
		}
	}
}

func FuzzDivider(f *testing.F) {
	f.Add(uint32(12345), uint32(7))
	f.Fuzz(func(t *testing.T, x, n uint32) {
		if n == 0 {
			return
		}
		d := newDivider(int(n))
		if got, want := d.mod(x), x%n; got != want {
			t.Fatalf("%d mod %d = %d, want %d", x, n, got, want)
		}
		if n >= 2 {
			if got, want := d.div(x), x/n; got != want {
				t.Fatalf("%d / %d = %d, want %d", x, n, got, want)
			}
		}
	})
}
