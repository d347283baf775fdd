package balancer

import (
	"testing"
	"unsafe"
)

func TestLoadLayout(t *testing.T) {
	if s := unsafe.Sizeof(Load{}); s != 128 {
		t.Errorf("Load is %d bytes, want 128 (hot fields in one cache line of a slab)", s)
	}
	if o := unsafe.Offsetof(Load{}.clk); o >= 64 {
		t.Errorf("the pick path's fields end at %d, past the first cache line", o)
	}
}

func TestNextPrime(t *testing.T) {
	for n, want := range map[int]int{0: 2, 2: 2, 3: 3, 4: 5, 1000: 1009, 65536: 65537, 65537: 65537} {
		if got := nextPrime(n); got != want {
			t.Errorf("nextPrime(%d) = %d, want %d", n, got, want)
		}
	}
}
