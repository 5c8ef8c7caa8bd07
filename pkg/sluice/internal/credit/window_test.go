package credit

import "testing"

func TestWindow(t *testing.T) {
	type step struct {
		op   string // pull (NextPull+StartPull), end, finish
		n    int
		want int // NextPull result before a pull; Free after other ops
	}
	for _, tc := range []struct {
		name  string
		limit int
		steps []step
	}{
		{"first pull takes all", 8, []step{{"pull", 0, 8}, {"end", 8, 8}}},
		{"held messages keep credit until finished", 4, []step{
			{"pull", 0, 4}, {"end", 1, 1}, // 3 arrived, 1 unused
			{"finish", 0, 2}, {"pull", 0, 2}, // half free: pull again
			{"finish", 0, 1}, {"finish", 0, 2},
		}},
		{"waits while less than half free and a pull is out", 10, []step{
			{"pull", 0, 10}, {"finish", 0, 1}, {"pull", 0, 0},
			{"finish", 0, 2}, {"finish", 0, 3}, {"finish", 0, 4}, {"pull", 0, 0},
			{"finish", 0, 5}, {"pull", 0, 5},
		}},
		{"nothing out and anything free: pull", 10, []step{
			{"pull", 0, 10}, {"end", 0, 0}, {"finish", 0, 1}, {"pull", 0, 1},
		}},
		{"limit below one is one", 0, []step{{"pull", 0, 1}, {"pull", 0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWindow(tc.limit)
			for i, s := range tc.steps {
				switch s.op {
				case "pull":
					n := w.NextPull()
					if n != s.want {
						t.Fatalf("step %d: NextPull = %d, want %d (used %d, pulls %d)", i, n, s.want, w.Used(), w.Pulls())
					}
					if n > 0 {
						w.StartPull(n)
					}
				case "end":
					w.EndPull(s.n)
					if w.Free() != s.want {
						t.Fatalf("step %d: Free = %d, want %d", i, w.Free(), s.want)
					}
				case "finish":
					w.Finish()
					if w.Free() != s.want {
						t.Fatalf("step %d: Free = %d, want %d", i, w.Free(), s.want)
					}
				}
				if w.Used() > w.Limit() || w.Used() < 0 {
					t.Fatalf("step %d: used %d outside 0..%d", i, w.Used(), w.Limit())
				}
			}
		})
	}
}

func TestWindowRefusesOverdraw(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("pulling more than free must panic: it is a bug in the owner loop")
		}
	}()
	w := NewWindow(2)
	w.StartPull(3)
}
