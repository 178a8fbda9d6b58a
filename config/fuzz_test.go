package config_test

import (
	"errors"
	"os"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/stewardha/steward/config"
)

// FuzzParse feeds arbitrary bytes to Parse: it must not panic, must return
// either a config or *Errors, a config it returns must validate, and its
// redacted form must print as YAML that loads back to the same thing.
//
//	go test -fuzz=FuzzParse ./config/
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/example.yml", "testdata/design-example.yml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(dropSection(data, "mysql"))
	}
	f.Add([]byte(head + pg))
	f.Add([]byte(head + "mysql: {start_command: [/usr/bin/systemctl, start, mariadb]}\n"))
	f.Add([]byte(head + pg + "base: &b {ttl: 20s}\nbootstrap: {<<: *b, loop_wait: 2}\n"))
	f.Add([]byte(head + pg + "tags: {nofailvoer: true, zone: a}\nbootstrap: {ttl: 2s}\n"))
	f.Add([]byte("a: [\n"))
	f.Add([]byte(""))

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, noEnv)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c, err)
		}
		if err != nil {
			var errs *config.Errors
			if !errors.As(err, &errs) || len(*errs) == 0 {
				t.Fatalf("error is %T %v, want a non-empty *config.Errors", err, err)
			}
			for _, fe := range *errs {
				if fe.Msg == "" {
					t.Fatalf("empty message for path %q", fe.Path)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse succeeded but Validate fails: %v", err)
		}
		out, err := yaml.Marshal(c.Redacted())
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := config.Parse(out, noEnv)
		if err != nil {
			t.Fatalf("redacted output does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back.Redacted(), c.Redacted()) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v\n%s", back.Redacted(), c.Redacted(), out)
		}
	})
}
