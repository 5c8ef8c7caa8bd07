// Package bytesize is a byte count that reads and writes human units
// ("64KiB", "1GB", "1048576") in configuration files.
package bytesize

import (
	"fmt"
	"math"

	"github.com/dustin/go-humanize"
)

// Size is a number of bytes.
type Size int64

// Parse reads "1MiB", "512 KB", "1048576" and the like.
func Parse(s string) (Size, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512KiB, 1MiB, 1GB or a byte count)", s)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return Size(n), nil
}

// UnmarshalText implements encoding.TextUnmarshaler for config decoding.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes the size in IEC units ("1.0 MiB" style without spaces).
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	if s < 0 {
		return fmt.Sprintf("%d", int64(s))
	}
	return humanize.IBytes(uint64(s))
}
