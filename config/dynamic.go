package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// ParseDynamicJSON decodes the DCS copy of the cluster-wide settings (a JSON
// object with the same keys as the bootstrap section). Keys that are
// missing take their defaults (DefaultDynamic), unknown keys are errors,
// durations may be strings ("10s") or numbers of seconds, sizes numbers of
// bytes or strings ("1MB"). The result is validated with prefix "config";
// on any problem the zero Dynamic and *Errors are returned.
func ParseDynamicJSON(b []byte) (Dynamic, error) {
	d := DefaultDynamic()
	var v collector
	if decodeDynamicJSON(b, &d, &v) {
		for _, fe := range d.check("config") {
			if !v.covers(fe.Path) {
				v.errs = append(v.errs, fe)
			}
		}
	}
	if err := v.err(); err != nil {
		return Dynamic{}, err
	}
	return d, nil
}

// decodeDynamicJSON decodes b into d; it reports false when b is not a
// well-formed JSON object, whose parts must then not be validated.
func decodeDynamicJSON(b []byte, d *Dynamic, v *collector) bool {
	const prefix = "config"
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		v.add(prefix, "invalid JSON: %v", jsonErr(err))
		return false
	}
	if tok != json.Delim('{') {
		v.add(prefix, "expected a JSON object, found %s", jsonTokenKind(tok))
		return false
	}
	rv := reflect.ValueOf(d).Elem()
	si := fieldsOf(rv.Type(), "json")
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			v.add(prefix, "invalid JSON: %v", jsonErr(err))
			return false
		}
		key, _ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			v.add(join(prefix, key), "invalid JSON: %v", jsonErr(err))
			return false
		}
		path := join(prefix, key)
		i, known := si.index[key]
		switch {
		case seen[key]:
			v.add(path, "duplicate key")
		case !known:
			v.add(path, "%s", unknownKey(key, si.names))
		case string(raw) != "null":
			if msg := decodeJSONField(raw, rv.Field(i)); msg != "" {
				v.add(path, "%s", msg)
				v.failed = append(v.failed, path)
			}
		}
		seen[key] = true
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		v.add(prefix, "invalid JSON: %v", jsonErr(err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		v.add(prefix, "invalid JSON: unexpected data after the object")
		return false
	}
	return true
}

func jsonErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func jsonTokenKind(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return string(t)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// decodeJSONField stores raw into f and returns "" or what is wrong.
func decodeJSONField(raw json.RawMessage, f reflect.Value) string {
	shown := string(raw)
	if len(shown) > 40 {
		shown = shown[:37] + "..."
	}
	switch p := f.Addr().Interface().(type) {
	case *Duration:
		if err := p.UnmarshalJSON(raw); err != nil {
			return err.Error()
		}
	case *Size:
		if err := p.UnmarshalJSON(raw); err != nil {
			return err.Error()
		}
	case *string:
		if json.Unmarshal(raw, p) != nil {
			return "expected a string, found " + shown
		}
	case *bool:
		if json.Unmarshal(raw, p) != nil {
			return "expected true or false, found " + shown
		}
	case *int:
		if json.Unmarshal(raw, p) != nil {
			return "expected an integer, found " + shown
		}
	default:
		panic(fmt.Sprintf("config: no JSON decoder for %s", f.Type()))
	}
	return ""
}

// Fields lists the keys of the dynamic settings, as used in the bootstrap
// section, the DCS JSON and `steward edit-config --set`.
func (d Dynamic) Fields() []string {
	return fieldsOf(reflect.TypeOf(d), "json").names
}

// Set parses value for key (a key name from Fields, e.g. loop_wait) by the
// field's type and stores it; on error d is unchanged. It does not check
// ranges or cross-field rules: call Validate afterwards.
func (d *Dynamic) Set(key, value string) error {
	rv := reflect.ValueOf(d).Elem()
	si := fieldsOf(rv.Type(), "json")
	i, ok := si.index[key]
	if !ok {
		return &Errors{{Path: key, Msg: unknownKey(key, si.names)}}
	}
	fail := func(format string, args ...any) error {
		return &Errors{{Path: key, Msg: fmt.Sprintf(format, args...)}}
	}
	switch p := rv.Field(i).Addr().Interface().(type) {
	case *Duration:
		x, err := ParseDuration(value)
		if err != nil {
			return fail("%v", err)
		}
		*p = x
	case *Size:
		x, err := ParseSize(value)
		if err != nil {
			return fail("%v", err)
		}
		*p = x
	case *string:
		*p = strings.TrimSpace(value)
	case *bool:
		b, ok := parseBool(value)
		if !ok {
			return fail("expected true or false, found %q", value)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil {
			return fail("expected an integer, found %q", value)
		}
		*p = n
	default:
		panic(fmt.Sprintf("config: no parser for %s", rv.Field(i).Type()))
	}
	return nil
}
