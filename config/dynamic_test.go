package config_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stewardha/steward/config"
)

func TestParseDynamicJSON(t *testing.T) {
	tests := []struct {
		name string
		json string
		want func(*config.Dynamic)
	}{
		{"empty object takes defaults", `{}`, func(*config.Dynamic) {}},
		{"durations as strings", `{"ttl": "20s", "loop_wait": "500ms", "retry_timeout": "2s"}`, func(d *config.Dynamic) {
			d.TTL, d.LoopWait, d.RetryTimeout = config.Duration(20*time.Second), config.Duration(500*time.Millisecond), config.Duration(2*time.Second)
		}},
		{"durations as numbers", `{"ttl": 20, "loop_wait": 0.5, "primary_start_timeout": 0}`, func(d *config.Dynamic) {
			d.TTL, d.LoopWait, d.PrimaryStartTimeout = config.Duration(20*time.Second), config.Duration(500*time.Millisecond), 0
		}},
		{"durations as bare-number strings", `{"ttl": "20"}`, func(d *config.Dynamic) { d.TTL = config.Duration(20 * time.Second) }},
		{"size as number and string", `{"maximum_lag_on_failover": "16kB"}`, func(d *config.Dynamic) { d.MaximumLagOnFailover = 16 << 10 }},
		{"size as bytes", `{"maximum_lag_on_failover": 0}`, func(d *config.Dynamic) { d.MaximumLagOnFailover = 0 }},
		{"everything else", `{"synchronous_mode": "strict", "synchronous_node_count": 2, "failsafe_mode": true, "paused": true, "primary_unhealthy_timeout": "1m"}`, func(d *config.Dynamic) {
			d.SynchronousMode, d.SynchronousNodeCount, d.FailsafeMode, d.Paused = "strict", 2, true, true
			d.PrimaryUnhealthyTimeout = config.Duration(time.Minute)
		}},
		{"null keeps the default", `{"ttl": null}`, func(*config.Dynamic) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.ParseDynamicJSON([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			want := config.DefaultDynamic()
			tt.want(&want)
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseDynamicJSONErrors(t *testing.T) {
	tests := []struct{ json, path, msg string }{
		{`{"loop_wiat": "1s"}`, "config.loop_wiat", "unknown key; did you mean loop_wait?"},
		{`{"TTL": "10s"}`, "config.TTL", "did you mean ttl?"},
		{`{"ttl": "ten"}`, "config.ttl", `"ten" is not a duration`},
		{`{"ttl": true}`, "config.ttl", "true is not a duration"},
		{`{"ttl": "2s"}`, "config.ttl", "2s is too short: ttl must be >= loop_wait + 2*retry_timeout (7s)"},
		{`{"maximum_lag_on_failover": "lots"}`, "config.maximum_lag_on_failover", "is not a size"},
		{`{"synchronous_node_count": 1.5}`, "config.synchronous_node_count", "expected an integer, found 1.5"},
		{`{"paused": "yes"}`, "config.paused", `expected true or false, found "yes"`},
		{`{"synchronous_mode": 1}`, "config.synchronous_mode", "expected a string, found 1"},
		{`{"synchronous_mode": "sometimes"}`, "config.synchronous_mode", `expected off, on, strict or quorum, found "sometimes"`},
		{`{"ttl": "10s", "ttl": "20s"}`, "config.ttl", "duplicate key"},
		{`[]`, "config", "expected a JSON object, found an array"},
		{`{"ttl": `, "config.ttl", "invalid JSON"},
		{`{} {}`, "config", "unexpected data after the object"},
		{``, "config", "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			d, err := config.ParseDynamicJSON([]byte(tt.json))
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error = %v (%T), want *config.Errors", err, err)
			}
			if d != (config.Dynamic{}) {
				t.Errorf("returned %+v with the error, want the zero value", d)
			}
			fe, ok := errs.Lookup(tt.path)
			if !ok || !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("error =\n%v\nwant %s: ...%s...", err, tt.path, tt.msg)
			}
		})
	}
}

// The DCS copy is written with json.Marshal and read with ParseDynamicJSON.
func TestDynamicJSONRoundTrip(t *testing.T) {
	d := config.DefaultDynamic()
	d.TTL = config.Duration(15 * time.Second)
	d.MaximumLagOnFailover = 5 << 20
	d.SynchronousMode = "quorum"
	d.Paused = true
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ttl":"15s"`) {
		t.Errorf("json = %s", b)
	}
	got, err := config.ParseDynamicJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != d {
		t.Errorf("round trip: got %+v, want %+v", got, d)
	}
}

func TestDynamicSet(t *testing.T) {
	tests := []struct {
		key, value string
		want       func(*config.Dynamic)
	}{
		{"ttl", "20s", func(d *config.Dynamic) { d.TTL = config.Duration(20 * time.Second) }},
		{"loop_wait", "2", func(d *config.Dynamic) { d.LoopWait = config.Duration(2 * time.Second) }},
		{"maximum_lag_on_failover", "16MB", func(d *config.Dynamic) { d.MaximumLagOnFailover = 16 << 20 }},
		{"synchronous_mode", "strict", func(d *config.Dynamic) { d.SynchronousMode = "strict" }},
		{"synchronous_node_count", "2", func(d *config.Dynamic) { d.SynchronousNodeCount = 2 }},
		{"paused", "true", func(d *config.Dynamic) { d.Paused = true }},
		{"failsafe_mode", "on", func(d *config.Dynamic) { d.FailsafeMode = true }},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			d := config.DefaultDynamic()
			if err := d.Set(tt.key, tt.value); err != nil {
				t.Fatal(err)
			}
			want := config.DefaultDynamic()
			tt.want(&want)
			if d != want {
				t.Errorf("got %+v, want %+v", d, want)
			}
		})
	}
}

func TestDynamicSetErrors(t *testing.T) {
	tests := []struct{ key, value, msg string }{
		{"loop_wiat", "1s", "loop_wiat: unknown key; did you mean loop_wait?"},
		{"pause", "true", "pause: unknown key; did you mean paused?"},
		{"ttl", "soon", `ttl: "soon" is not a duration`},
		{"maximum_lag_on_failover", "big", `is not a size`},
		{"paused", "maybe", `paused: expected true or false, found "maybe"`},
		{"synchronous_node_count", "1.5", `synchronous_node_count: expected an integer, found "1.5"`},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			d := config.DefaultDynamic()
			err := d.Set(tt.key, tt.value)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Set error = %v, want %q", err, tt.msg)
			}
			if d != config.DefaultDynamic() {
				t.Errorf("a failed Set changed the value: %+v", d)
			}
		})
	}

	// Set checks types only; Validate checks the rules.
	d := config.DefaultDynamic()
	if err := d.Set("ttl", "3s"); err != nil {
		t.Fatal(err)
	}
	if err := d.Validate("config"); err == nil || !strings.Contains(err.Error(), "config.ttl: 3s is too short") {
		t.Errorf("Validate = %v", err)
	}
}

func TestDynamicFields(t *testing.T) {
	want := []string{"ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "synchronous_mode",
		"synchronous_node_count", "primary_unhealthy_timeout", "primary_start_timeout", "failsafe_mode", "paused"}
	got := config.DefaultDynamic().Fields()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Fields() = %q, want %q", got, want)
	}
	d := config.DefaultDynamic()
	for _, f := range got {
		// Every listed key is settable.
		if err := d.Set(f, "x"); err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("Set(%q) unknown", f)
		}
	}
}

func TestDynamicValidatePrefix(t *testing.T) {
	d := config.DefaultDynamic()
	d.SynchronousNodeCount = 0
	for _, prefix := range []string{"bootstrap", "config"} {
		err := d.Validate(prefix)
		if err == nil || err.Error() != prefix+".synchronous_node_count: 0 is too small: expected at least 1" {
			t.Errorf("Validate(%q) = %v", prefix, err)
		}
	}
}
