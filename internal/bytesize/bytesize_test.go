package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		err  bool
	}{
		{"1MiB", 1 << 20, false},
		{"64KiB", 64 << 10, false},
		{"1GB", 1_000_000_000, false},
		{"1048576", 1 << 20, false},
		{"1 GiB", 1 << 30, false},
		{"lots", 0, true},
		{"-1MiB", 0, true},
		{"", 0, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
	var s Size
	if err := s.UnmarshalText([]byte("2MiB")); err != nil || s != 2<<20 {
		t.Fatalf("UnmarshalText: %d %v", s, err)
	}
	if back, err := Parse(Size(3 << 20).String()); err != nil || back != 3<<20 {
		t.Fatalf("round trip: %d %v", back, err)
	}
}
