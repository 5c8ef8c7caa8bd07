package gateway

import "testing"

func TestShareAddsUpToFree(t *testing.T) {
	for _, free := range []int64{0, 1, 2, 7, 100, 101} {
		for n := 1; n <= 4; n++ {
			var sum int64
			for rank := range n {
				s := share(free, n, rank)
				if s < free/int64(n) || s > free/int64(n)+1 {
					t.Fatalf("share(%d, %d, %d) = %d: unfair", free, n, rank, s)
				}
				sum += s
			}
			if sum != free {
				t.Fatalf("shares of %d among %d add up to %d", free, n, sum)
			}
		}
	}
	if share(-5, 2, 0) > 0 {
		t.Fatal("an over-full topic gives no credit")
	}
}
