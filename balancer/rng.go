package balancer

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// rng is a picker's source of random numbers: math/rand/v2's per-thread
// generator, or, with [WithSeed], a splitmix64 sequence advanced with one
// atomic add. Neither locks.
type rng struct {
	seeded bool
	state  atomic.Uint64
}

func newRNG(c *config) *rng {
	r := &rng{seeded: c.seeded}
	r.state.Store(c.seed)
	return r
}

func (r *rng) uint64() uint64 {
	if !r.seeded {
		return rand.Uint64()
	}
	return mix64(r.state.Add(0x9e3779b97f4a7c15))
}

// intn returns a number in [0, n), n > 0 (Lemire's multiply-shift; the
// bias is below n/2⁶⁴).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.uint64(), uint64(n))
	return int(hi)
}

// pair returns two distinct numbers in [0, n), n > 1, from one draw: the
// first from the high half of the draw's product with n, the second from
// the low half, which is itself close to uniform (the bias is below
// n²/2⁶⁴).
func (r *rng) pair(n int) (a, b int) {
	hi, lo := bits.Mul64(r.uint64(), uint64(n))
	hi2, _ := bits.Mul64(lo, uint64(n-1))
	a, b = int(hi), int(hi2)
	if b >= a {
		b++
	}
	return a, b
}

// float64 returns a number in [0, 1).
func (r *rng) float64() float64 {
	return float64(r.uint64()>>11) / (1 << 53)
}

// mix64 is splitmix64's finaliser: a bijection with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
