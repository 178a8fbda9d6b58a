package config

import (
	"maps"
	"slices"
)

// Masked replaces every non-empty password in Redacted output.
const Masked = "******"

// Redacted returns a deep copy of c that is safe to print: every non-empty
// password is replaced by Masked, except where password_file is set; there
// the password is cleared, so that the file is named instead and the output
// (yaml.Marshal) loads again as it is. Path is not a YAML key and is not
// printed.
func (c *Config) Redacted() *Config {
	if c == nil {
		return nil
	}
	r := *c
	r.Etcd.Endpoints = slices.Clone(c.Etcd.Endpoints)
	r.API.Allowlist = slices.Clone(c.API.Allowlist)
	if c.Postgres != nil {
		p := *c.Postgres
		p.Parameters = maps.Clone(p.Parameters)
		p.PgHba = slices.Clone(p.PgHba)
		r.Postgres = &p
	}
	if c.MySQL != nil {
		m := *c.MySQL
		m.StartCommand = slices.Clone(m.StartCommand)
		m.StopCommand = slices.Clone(m.StopCommand)
		m.CloneCommand = slices.Clone(m.CloneCommand)
		r.MySQL = &m
	}
	if c.Fencing.Hooks != nil {
		r.Fencing.Hooks = make([]Hook, len(c.Fencing.Hooks))
		for i, h := range c.Fencing.Hooks {
			h.Command = slices.Clone(h.Command)
			r.Fencing.Hooks[i] = h
		}
	}
	r.Tags.Custom = maps.Clone(c.Tags.Custom)
	r.Callbacks.OnRoleChange = slices.Clone(c.Callbacks.OnRoleChange)

	for _, s := range r.secrets() {
		switch {
		case *s.file != "":
			*s.password = ""
		case *s.password != "":
			*s.password = Masked
		}
	}
	return &r
}
