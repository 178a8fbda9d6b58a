package config_test

import (
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"10s": 10 * time.Second, "500ms": 500 * time.Millisecond, "1m30s": 90 * time.Second,
		"10": 10 * time.Second, "2.5": 2500 * time.Millisecond, " 3 ": 3 * time.Second, "0": 0, "-1s": -time.Second,
	}
	for in, want := range good {
		got, err := config.ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ten", "10 s", "1d", "NaN", "Inf", "9223372036.854775807", "1e300"} {
		if got, err := config.ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]config.Size{
		"1048576": 1 << 20, "1MB": 1 << 20, "16kB": 16 << 10, "16KB": 16 << 10, "1MiB": 1 << 20,
		"2GB": 2 << 30, "1TB": 1 << 40, "512 B": 512, "0": 0, "1.5kB": 1536, "8m": 8 << 20,
	}
	for in, want := range good {
		got, err := config.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "1XB", "MB", "NaN", "9223372036854775807", "8EB", "9999999TB"} {
		if got, err := config.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, int64(got))
		}
	}
}

func TestSizeString(t *testing.T) {
	for in, want := range map[config.Size]string{0: "0", 1000: "1000", 1 << 20: "1MB", 16 << 10: "16kB", 3 << 30: "3GB", 1536: "1536"} {
		if got := in.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(in), got, want)
		}
		back, err := config.ParseSize(in.String())
		if err != nil || back != in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in.String(), int64(back), err, int64(in))
		}
	}
}
