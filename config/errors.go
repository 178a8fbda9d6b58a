package config

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// FieldError is one problem in a configuration: the dotted key path it is
// about (list items as "fencing.hooks[0].timeout"; "" for problems with the
// file as a whole) and what is wrong with it, including what was found and
// what is expected.
type FieldError struct {
	Path string
	Msg  string
}

// Error returns "path: msg", or just msg when Path is empty.
func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in one configuration. Load, Parse,
// ParseDynamicJSON and the Validate methods return it as *Errors:
//
//	var errs *config.Errors
//	if errors.As(err, &errs) {
//		for _, fe := range *errs { ... }
//	}
//
// A single FieldError can also be extracted with errors.As, since Unwrap
// exposes each of them.
type Errors []FieldError

// Error returns one "path: msg" line per problem.
func (e *Errors) Error() string {
	if e == nil {
		return ""
	}
	lines := make([]string, len(*e))
	for i, fe := range *e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual FieldErrors.
func (e *Errors) Unwrap() []error {
	if e == nil {
		return nil
	}
	errs := make([]error, len(*e))
	for i, fe := range *e {
		errs[i] = fe
	}
	return errs
}

// Lookup returns the first problem reported for path.
func (e *Errors) Lookup(path string) (FieldError, bool) {
	if e == nil {
		return FieldError{}, false
	}
	for _, fe := range *e {
		if fe.Path == path {
			return fe, true
		}
	}
	return FieldError{}, false
}

// collector accumulates FieldErrors.
type collector struct {
	errs   Errors
	failed []string // paths whose value could not be decoded or resolved
}

func (c *collector) add(path, format string, args ...any) {
	c.errs = append(c.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) addErrors(errs Errors) {
	c.errs = append(c.errs, errs...)
}

// err returns the collected problems as *Errors, or a nil error.
func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	errs := slices.Clone(c.errs)
	return &errs
}

// covers reports whether path, or a parent of it, could not be decoded, so
// that such a value does not also produce follow-up validation errors.
func (c *collector) covers(path string) bool {
	for _, p := range c.failed {
		if path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[") {
			return true
		}
	}
	return false
}

// join appends key to a dotted path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a list index to a path.
func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// unknownKey explains an unknown key, suggesting the closest valid one.
func unknownKey(key string, valid []string) string {
	if s := suggest(key, valid); s != "" {
		return "unknown key; did you mean " + s + "?"
	}
	return "unknown key; valid keys here: " + strings.Join(valid, ", ")
}

// suggest returns the valid key that key most likely misspells: the closest
// one within edit distance 2 (case-insensitive), else the keys that key is a
// prefix of (or that are a prefix of key), else "".
func suggest(key string, valid []string) string {
	lk := strings.ToLower(key)
	best, bestDist := "", 3
	for _, v := range valid {
		if d := levenshtein(lk, strings.ToLower(v)); d < bestDist {
			best, bestDist = v, d
		}
	}
	if best != "" {
		return best
	}
	if utf8.RuneCountInString(lk) < 3 {
		return ""
	}
	var prefixed []string
	for _, v := range valid {
		lv := strings.ToLower(v)
		if strings.HasPrefix(lv, lk) || strings.HasPrefix(lk, lv) {
			prefixed = append(prefixed, v)
		}
	}
	switch len(prefixed) {
	case 0:
		return ""
	case 1:
		return prefixed[0]
	}
	return strings.Join(prefixed[:len(prefixed)-1], ", ") + " or " + prefixed[len(prefixed)-1]
}

// levenshtein is the edit distance between a and b, in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// oneOfList renders allowed values as "a, b or c".
func oneOfList(allowed []string) string {
	switch len(allowed) {
	case 0:
		return ""
	case 1:
		return allowed[0]
	}
	return strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
}
