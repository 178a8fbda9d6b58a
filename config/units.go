package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration ("10s", "500ms") or as
// a bare number meaning seconds ("10", 2.5). It marshals to JSON and YAML as
// its Go string form.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration parses "10s", "1m30s", "500ms", or a bare number of seconds.
// Negative values are accepted here; Validate decides what is allowed.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: expected a Go duration like 10s or 500ms, or a number of seconds")
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) >= float64(math.MaxInt64)/float64(time.Second) {
			return 0, fmt.Errorf("%q is not a valid duration: out of range", s)
		}
		return Duration(f * float64(time.Second)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: expected a Go duration like 10s or 500ms, or a number of seconds", s)
	}
	return Duration(v), nil
}

// MarshalJSON writes the Go string form ("10s").
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a string ("10s", "10") or a JSON number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err2 := json.Unmarshal(b, &f); err2 != nil {
			return fmt.Errorf("%s is not a duration: expected a string like \"10s\" or a number of seconds", string(b))
		}
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the Go string form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a number of bytes written as a plain number or with a unit:
// B, kB/KB/KiB, MB/MiB, GB/GiB, TB/TiB (case-insensitive; all units are
// powers of 1024, as in PostgreSQL's own settings).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"tib", 1 << 40}, {"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10},
	{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10},
	{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10},
	{"b", 1},
}

// ParseSize parses "1MB", "16kB", "1048576" or "512 B".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size: expected bytes (1048576) or a size with a unit (16kB, 1MB, 1GB)")
	}
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			lower = strings.TrimSpace(strings.TrimSuffix(lower, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(lower, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("%q is not a size: expected bytes (1048576) or a size with a unit (16kB, 1MB, 1GB)", s)
	}
	v := n * float64(mult)
	if math.Abs(v) >= float64(math.MaxInt64) { // float64(MaxInt64) is 2^63, which overflows
		return 0, fmt.Errorf("%q is not a valid size: out of range", s)
	}
	return Size(v), nil
}

// String renders the size with the largest exact unit ("1MB", "16kB", "1000").
func (s Size) String() string {
	v := int64(s)
	switch {
	case v != 0 && v%(1<<30) == 0:
		return strconv.FormatInt(v/(1<<30), 10) + "GB"
	case v != 0 && v%(1<<20) == 0:
		return strconv.FormatInt(v/(1<<20), 10) + "MB"
	case v != 0 && v%(1<<10) == 0:
		return strconv.FormatInt(v/(1<<10), 10) + "kB"
	}
	return strconv.FormatInt(v, 10)
}

// MarshalJSON writes the size as a JSON number of bytes.
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(int64(s)) }

// UnmarshalJSON accepts a JSON number of bytes or a string with a unit.
func (s *Size) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		v, err := ParseSize(n.String())
		if err != nil {
			return err
		}
		*s = v
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("%s is not a size: expected bytes or a string like \"1MB\"", string(b))
	}
	v, err := ParseSize(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML writes the human form ("1MB").
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }
