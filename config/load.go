package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// Load reads, decodes and validates the configuration file at path.
//
// lookupEnv is how secrets are looked up in the environment (os.LookupEnv in
// production; nil means no environment). A relative password_file is
// resolved against the directory of path.
//
// Reading the file fails with the *fs.PathError from os.ReadFile; every
// problem with its contents is reported at once as *Errors.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	c, err := parse(data, lookupEnv, filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

// Parse decodes and validates a configuration file's contents: it applies
// the defaults, resolves secrets (a relative password_file is resolved
// against the working directory) and calls Validate. Every problem is
// reported at once as *Errors.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(data, lookupEnv, "")
}

func parse(data []byte, lookupEnv func(string) (string, bool), baseDir string) (*Config, error) {
	root, fe := readDocument(data)
	if fe != nil {
		return nil, &Errors{*fe}
	}
	c := defaultConfig()
	var d decoder
	d.decode("", root, reflect.ValueOf(&c).Elem())
	c.derive()
	c.resolveSecrets(lookupEnv, baseDir, &d.errs)

	var v collector
	c.validate(&v)
	for _, fe := range v.errs {
		if !d.errs.covers(fe.Path) {
			d.errs.errs = append(d.errs.errs, fe)
		}
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// secret is one password key with its password_file sibling.
type secret struct {
	path     string // "postgres.superuser.password"
	password *string
	file     *string
}

// filePath is the key path of the password_file sibling.
func (s secret) filePath() string { return s.path + "_file" }

// envName is the environment variable that overrides the password:
// STEWARD_ + the key path, upper-cased, dots as underscores.
func (s secret) envName() string {
	return "STEWARD_" + strings.ToUpper(strings.ReplaceAll(s.path, ".", "_"))
}

// secrets lists the password keys of the sections that are present.
func (c *Config) secrets() []secret {
	s := []secret{
		{"etcd.password", &c.Etcd.Password, &c.Etcd.PasswordFile},
		{"api.password", &c.API.Password, &c.API.PasswordFile},
	}
	if p := c.Postgres; p != nil {
		s = append(s,
			secret{"postgres.superuser.password", &p.Superuser.Password, &p.Superuser.PasswordFile},
			secret{"postgres.replication.password", &p.Replication.Password, &p.Replication.PasswordFile})
	}
	if m := c.MySQL; m != nil {
		s = append(s,
			secret{"mysql.password", &m.Password, &m.PasswordFile},
			secret{"mysql.replication.password", &m.Replication.Password, &m.Replication.PasswordFile})
	}
	return s
}

// maxSecretSize bounds what is read from a password_file.
const maxSecretSize = 64 << 10

// resolveSecrets stores each resolved secret in its Password field. The
// environment variable wins over password_file, which wins over password;
// an empty environment variable counts as unset. Setting both password and
// password_file in the file is an error.
func (c *Config) resolveSecrets(lookupEnv func(string) (string, bool), baseDir string, errs *collector) {
	for _, s := range c.secrets() {
		if *s.password != "" && *s.file != "" {
			errs.add(s.path+", "+s.filePath(), "both are set; keep one of them (or set %s)", s.envName())
			errs.failed = append(errs.failed, s.path)
			continue
		}
		if lookupEnv != nil {
			if v, ok := lookupEnv(s.envName()); ok && v != "" {
				*s.password = v
				continue
			}
		}
		if *s.file == "" {
			continue
		}
		name := *s.file
		if !filepath.IsAbs(name) && baseDir != "" {
			name = filepath.Join(baseDir, name)
		}
		v, err := readSecret(name)
		if err != nil {
			errs.add(s.filePath(), "%v", err)
			errs.failed = append(errs.failed, s.path)
			continue
		}
		*s.password = v
	}
}

// readSecret returns a secret file's contents without trailing newlines.
// It refuses anything but a small regular file, so that a mistaken
// /dev/zero or FIFO cannot hang the agent.
func readSecret(name string) (string, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %v", name, unwrapPathError(err))
	}
	switch {
	case fi.IsDir():
		return "", fmt.Errorf("cannot read %s: it is a directory; expected a file holding the password", name)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("cannot read %s: not a regular file; expected a file holding the password", name)
	case fi.Size() > maxSecretSize:
		return "", fmt.Errorf("%s is %d bytes; a password file holds only the password (at most %d bytes)", name, fi.Size(), maxSecretSize)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %v", name, unwrapPathError(err))
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s is empty; expected the password", name)
	}
	return v, nil
}

func unwrapPathError(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}
