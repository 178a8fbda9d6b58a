package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxMergeDepth bounds nested YAML merge keys ("<<: *base" inside a mapping
// that is itself merged).
const maxMergeDepth = 16

// readDocument parses data as exactly one YAML document whose top level is a
// mapping.
func readDocument(data []byte) (root *yaml.Node, fe *FieldError) {
	defer func() {
		// The YAML parser is third-party code fed with operator input; a
		// panic in it must surface as a configuration error.
		if r := recover(); r != nil {
			root, fe = nil, &FieldError{Msg: fmt.Sprintf("YAML parser failed: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Msg: emptyFile}
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &FieldError{Msg: fmt.Sprintf("multiple YAML documents (the second starts on line %d); a configuration file holds exactly one", extra.Line)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &FieldError{Msg: emptyFile}
	}
	root = resolve(doc.Content[0])
	if isNull(root) {
		return nil, &FieldError{Msg: emptyFile}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &FieldError{Msg: fmt.Sprintf("the file must be a YAML mapping of keys (cluster: ..., name: ..., etcd: ...), found %s on line %d", kindOf(root), root.Line)}
	}
	return root, nil
}

const emptyFile = "empty configuration: expected a YAML mapping with at least cluster, name, etcd and postgres or mysql"

var syntaxLine = regexp.MustCompile(`^line (\d+): (.*)$`)

func syntaxError(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		return &FieldError{Msg: fmt.Sprintf("YAML syntax error on line %s: %s", m[1], m[2])}
	}
	return &FieldError{Msg: "YAML syntax error: " + msg}
}

// resolve follows aliases to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindOf describes a node for "found ..." messages.
func kindOf(n *yaml.Node) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "a boolean"
	case "!!int", "!!float":
		return "a number"
	}
	return "a string"
}

// found describes a node for "expected X, found ..." messages about scalar
// values: the value itself when it is a scalar.
func found(n *yaml.Node) string {
	n = resolve(n)
	if n != nil && n.Kind == yaml.ScalarNode && !isNull(n) {
		v := n.Value
		if r := []rune(v); len(r) > 60 {
			v = string(r[:57]) + "..."
		}
		return strconv.Quote(v)
	}
	return kindOf(n)
}

// defaulter is implemented by values that have defaults of their own when
// they appear in a file (a postgres section, a fencing hook).
type defaulter interface {
	setDefaults()
}

// decoder walks a yaml.Node tree against the config structs.
type decoder struct {
	errs collector
}

// fail reports a value that could not be decoded; validation does not
// report that path (or anything under it) again.
func (d *decoder) fail(path, format string, args ...any) {
	d.errs.add(path, format, args...)
	d.errs.failed = append(d.errs.failed, path)
}

// report reports a problem that leaves the decoded values as they are
// (an unknown or duplicate key).
func (d *decoder) report(path, format string, args ...any) {
	d.errs.add(path, format, args...)
}

// decode stores n into v. A null value leaves v as it is (its default).
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	switch p := v.Addr().Interface().(type) {
	case *Duration:
		if s, ok := d.scalar(path, n, "a duration such as 10s or a number of seconds"); ok {
			x, err := ParseDuration(s)
			if err != nil {
				d.fail(path, "%v", err)
				return
			}
			*p = x
		}
		return
	case *Size:
		if s, ok := d.scalar(path, n, "a size such as 1MB or a number of bytes"); ok {
			x, err := ParseSize(s)
			if err != nil {
				d.fail(path, "%v", err)
				return
			}
			*p = x
		}
		return
	case *string:
		if s, ok := d.scalar(path, n, "a string"); ok {
			*p = s
		}
		return
	case *bool:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "expected true or false, found %s", kindOf(n))
			return
		}
		b, ok := parseBool(n.Value)
		if !ok {
			d.fail(path, "expected true or false, found %s", found(n))
			return
		}
		*p = b
		return
	case *int:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, "expected an integer, found %s", kindOf(n))
			return
		}
		i, err := strconv.ParseInt(n.Value, 10, strconv.IntSize)
		if err != nil {
			d.fail(path, "expected an integer, found %s", found(n))
			return
		}
		*p = int(i)
		return
	case *[]string:
		d.stringList(path, n, p)
		return
	case *map[string]string:
		d.stringMap(path, n, p)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		if df, ok := nv.Interface().(defaulter); ok {
			df.setDefaults()
		}
		d.decode(path, n, nv.Elem())
		v.Set(nv)
	case reflect.Struct:
		d.structure(path, n, v)
	case reflect.Slice:
		d.structList(path, n, v)
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	}
}

// scalar returns a scalar's text, or reports what was found instead.
func (d *decoder) scalar(path string, n *yaml.Node, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, "expected %s, found %s", want, kindOf(n))
		return "", false
	}
	return n.Value, true
}

// parseBool accepts true/false and, as YAML 1.1 and Patroni configurations
// do, yes/no and on/off (any case).
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

func (d *decoder) stringList(path string, n *yaml.Node, p *[]string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, "expected a list, found %s%s", kindOf(n), listHint(path, n))
		return
	}
	var out []string
	for i, item := range n.Content {
		item = resolve(item)
		ip := index(path, i)
		switch {
		case isNull(item):
			d.fail(ip, "expected a string, found null")
		case item.Kind != yaml.ScalarNode:
			d.fail(ip, "expected a string, found %s", kindOf(item))
		default:
			out = append(out, item.Value)
		}
	}
	*p = out
}

// listHint tells how to write a single value as a list.
func listHint(path string, n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return ""
	}
	switch {
	case path == "etcd.endpoints":
		return "; write endpoints: [" + flowItem(n.Value) + "]"
	case isCommand(path):
		return "; write the command as a list of arguments, e.g. " + flowList(strings.Fields(n.Value)) + " (it is run without a shell)"
	}
	key := path[strings.LastIndexAny(path, ".]")+1:]
	return "; write " + key + ": [" + flowItem(n.Value) + "]"
}

func isCommand(path string) bool {
	return strings.HasSuffix(path, ".command") || strings.HasSuffix(path, "_command") || path == "callbacks.on_role_change"
}

func flowList(items []string) string {
	q := make([]string, len(items))
	for i, it := range items {
		q[i] = flowItem(it)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// flowItem quotes s when it could not stand unquoted in a YAML flow list.
func flowItem(s string) string {
	if s == "" || s != strings.TrimSpace(s) || s == "-" || s == "?" || s == ":" ||
		strings.ContainsAny(s, ",[]{}#&*!|>'\"%@`") || strings.Contains(s, ": ") ||
		strings.HasPrefix(s, "- ") || strings.HasPrefix(s, "? ") {
		return strconv.Quote(s)
	}
	return s
}

func (d *decoder) stringMap(path string, n *yaml.Node, p *map[string]string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "expected a mapping (key: value), found %s", kindOf(n))
		return
	}
	for _, kv := range d.pairs(path, n) {
		d.mapEntry(join(path, kv.key), kv.key, kv.value, p)
	}
}

// mapEntry stores one scalar map value in its string form.
func (d *decoder) mapEntry(path, key string, n *yaml.Node, p *map[string]string) {
	n = resolve(n)
	switch {
	case isNull(n):
		d.fail(path, `expected a value, found null; write '' for an empty string`)
	case n.Kind != yaml.ScalarNode:
		d.fail(path, "expected a single value (string, number or boolean), found %s", kindOf(n))
	default:
		if *p == nil {
			*p = map[string]string{}
		}
		(*p)[key] = n.Value
	}
}

func (d *decoder) structList(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, "expected a list, found %s", kindOf(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	for i, item := range n.Content {
		ev := reflect.New(v.Type().Elem())
		if df, ok := ev.Interface().(defaulter); ok {
			df.setDefaults()
		}
		item = resolve(item)
		if isNull(item) {
			d.fail(index(path, i), "expected a mapping (key: value), found null")
			continue
		}
		d.decode(index(path, i), item, ev.Elem())
		out = reflect.Append(out, ev.Elem())
	}
	if out.Len() > 0 {
		v.Set(out)
	} else {
		v.SetZero()
	}
}

// structInfo maps yaml keys to struct fields.
type structInfo struct {
	names  []string       // keys in declaration order
	index  map[string]int // key -> field index
	inline int            // index of the `yaml:",inline"` map, or -1
}

func fieldsOf(t reflect.Type, tagName string) structInfo {
	si := structInfo{index: map[string]int{}, inline: -1}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get(tagName), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			si.inline = i
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		si.names = append(si.names, name)
		si.index[name] = i
	}
	return si
}

func (d *decoder) structure(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "expected a mapping (key: value), found %s", kindOf(n))
		return
	}
	si := fieldsOf(v.Type(), "yaml")
	for _, kv := range d.pairs(path, n) {
		kp := join(path, kv.key)
		i, ok := si.index[kv.key]
		switch {
		case ok:
			d.decode(kp, kv.value, v.Field(i))
		case si.inline >= 0:
			m := v.Field(si.inline).Addr().Interface().(*map[string]string)
			d.mapEntry(kp, kv.key, kv.value, m)
		case path == "":
			d.report(kp, "%s", topLevelUnknown(kv.key, v.Type(), si))
		default:
			d.report(kp, "%s", unknownKey(kv.key, si.names))
		}
	}
}

// topLevelUnknown explains an unknown top-level key; a key that belongs in a
// section ("ttl") is pointed there.
func topLevelUnknown(key string, t reflect.Type, si structInfo) string {
	if suggest(key, si.names) != "" {
		return unknownKey(key, si.names)
	}
	for _, name := range si.names {
		ft := t.Field(si.index[name]).Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct {
			continue
		}
		for _, sub := range fieldsOf(ft, "yaml").names {
			if strings.EqualFold(sub, key) {
				return fmt.Sprintf("unknown key; %s belongs in the %s section (%s.%s)", key, name, name, sub)
			}
		}
	}
	return unknownKey(key, si.names)
}

type pair struct {
	key   string
	value *yaml.Node
}

// pairs returns a mapping's entries in order, reporting non-scalar and
// duplicate keys, and applying YAML merge keys ("<<: *base"); explicit keys
// win over merged ones.
func (d *decoder) pairs(path string, n *yaml.Node) []pair {
	var out []pair
	line := map[string]int{}
	var merged []pair
	seen := map[*yaml.Node]bool{n: true}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.merge(path, val, seen, 0)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.report(path, "line %d: expected a key name, found %s", k.Line, kindOf(k))
			continue
		}
		if first, dup := line[k.Value]; dup {
			d.report(join(path, k.Value), "duplicate key: set on line %d and again on line %d", first, k.Line)
			continue
		}
		line[k.Value] = k.Line
		out = append(out, pair{k.Value, val})
	}
	for _, p := range merged {
		if _, explicit := line[p.key]; !explicit {
			line[p.key] = 0
			out = append(out, p)
		}
	}
	return out
}

// merge returns the entries a merge key's value contributes.
func (d *decoder) merge(path string, val *yaml.Node, seen map[*yaml.Node]bool, depth int) []pair {
	val = resolve(val)
	if depth > maxMergeDepth {
		d.report(path, "YAML merge keys (<<) nested too deeply")
		return nil
	}
	switch {
	case val == nil:
		return nil
	case val.Kind == yaml.MappingNode:
		if seen[val] {
			return nil
		}
		seen[val] = true
		// The mapping's own keys win over what it merges in turn.
		var out, nested []pair
		for i := 0; i+1 < len(val.Content); i += 2 {
			k := resolve(val.Content[i])
			switch {
			case k.Kind != yaml.ScalarNode:
			case k.ShortTag() == "!!merge":
				nested = append(nested, d.merge(path, val.Content[i+1], seen, depth+1)...)
			default:
				out = append(out, pair{k.Value, val.Content[i+1]})
			}
		}
		return append(out, nested...)
	case val.Kind == yaml.SequenceNode:
		var out []pair
		for _, item := range val.Content {
			if item = resolve(item); item == nil || item.Kind != yaml.MappingNode {
				d.report(path, "line %d: a YAML merge key (<<) takes a mapping or a list of mappings, found %s", val.Line, kindOf(item))
				continue
			}
			out = append(out, d.merge(path, item, seen, depth+1)...)
		}
		return out
	}
	d.report(path, "line %d: a YAML merge key (<<) takes a mapping or a list of mappings, found %s", val.Line, kindOf(val))
	return nil
}
