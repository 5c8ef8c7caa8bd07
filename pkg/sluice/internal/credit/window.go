// Package credit holds Sluice's credit window: how many messages a consumer
// may have asked for or be holding at once. It is a plain value with no
// goroutines, locks or clocks; the one loop that owns it drives it.
package credit

import "fmt"

// Window bounds outstanding messages: those requested from the broker and
// not yet arrived plus those arrived and not yet finished. A pull request
// takes credit for its whole batch; the unused part comes back when the pull
// ends, and each message's credit comes back when it is finished.
type Window struct {
	limit int
	used  int
	pulls int // pull requests outstanding
}

// NewWindow returns a window of limit credits (at least 1).
func NewWindow(limit int) *Window {
	return &Window{limit: max(1, limit)}
}

// Limit is the window's size.
func (w *Window) Limit() int { return w.limit }

// Used is the credit taken by outstanding pulls and held messages.
func (w *Window) Used() int { return w.used }

// Free is the credit that may be asked for now.
func (w *Window) Free() int { return w.limit - w.used }

// Pulls is the number of pull requests outstanding.
func (w *Window) Pulls() int { return w.pulls }

// NextPull returns how many messages to ask for now, or 0 to wait. It asks
// when at least half the window is free, or when nothing is being asked for
// and anything is free, so few large pulls are preferred to many small ones
// and the window never idles while credit is free.
func (w *Window) NextPull() int {
	free := w.Free()
	if free <= 0 {
		return 0
	}
	if free >= (w.limit+1)/2 || w.pulls == 0 {
		return free
	}
	return 0
}

// StartPull takes n credits for a pull request.
func (w *Window) StartPull(n int) {
	if n < 1 || n > w.Free() {
		panic(fmt.Sprintf("credit: pull of %d with %d free", n, w.Free()))
	}
	w.used += n
	w.pulls++
}

// EndPull returns the credit of the unused messages of a finished pull.
func (w *Window) EndPull(unused int) {
	if w.pulls == 0 || unused < 0 || unused > w.used {
		panic(fmt.Sprintf("credit: end of pull with %d unused, %d used, %d pulls", unused, w.used, w.pulls))
	}
	w.pulls--
	w.used -= unused
}

// Finish returns the credit of one finished message.
func (w *Window) Finish() {
	if w.used == 0 {
		panic("credit: finish with nothing held")
	}
	w.used--
}
