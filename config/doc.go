// Package config turns a steward configuration file into a validated
// Config, with defaults applied and secrets resolved, and handles the
// cluster-wide Dynamic settings that live in the DCS.
//
// # What it guarantees
//
//   - A *Config returned by Load or Parse has every default applied
//     (DESIGN.md "Interfaces users touch"; see defaults.go), its passwords
//     resolved, and it passes Validate. Exactly one of Postgres and MySQL is
//     non-nil.
//   - Every problem is reported, not just the first, as *Errors: one
//     FieldError per problem, naming the dotted key path
//     ("fencing.hooks[0].timeout"; "" for the file as a whole), the value
//     found and what is expected. A value that cannot be decoded is not
//     reported a second time by validation.
//   - Nothing is guessed: unknown keys (with a did-you-mean suggestion),
//     wrong types, duplicate keys, several YAML documents and custom tags
//     within two edits of a built-in tag ("nofailvoer") are errors. Durations
//     are Go durations ("10s") or numbers of seconds; sizes are bytes or
//     "16kB"/"1MB" (powers of 1024); booleans are true/false (yes/no and
//     on/off are accepted too). A null value ("ttl:" or "ttl: ~") means the
//     key is not set and keeps its default. postgres.parameters and custom
//     tags keep a scalar's text as written ("on", "0100").
//   - YAML anchors, aliases and merge keys ("<<: *base") work, and cannot
//     make decoding loop or explode.
//   - Secrets: each password key may instead come from its sibling
//     password_file (read once at load time, trailing newlines removed; it
//     must be a non-empty regular file of at most 64 KiB; a relative path is
//     resolved against the configuration file's directory) or from
//     STEWARD_<KEY_PATH> in the environment (STEWARD_POSTGRES_SUPERUSER_PASSWORD).
//     The environment wins over password_file, which wins over password; an
//     empty variable counts as unset. Setting both password and
//     password_file is an error. The package never reads the process
//     environment itself: callers pass os.LookupEnv.
//   - Redacted returns a copy safe to print whose yaml.Marshal output loads
//     again with Load/Parse.
//   - The package holds no mutable global state: its functions may be
//     called concurrently. Config and Dynamic are plain values.
//
// # What it does not do
//
//   - It does not touch the outside world beyond reading password files: it
//     does not check that data_dir, bin_dir, TLS files, fencing commands or
//     the watchdog device exist, that addresses resolve or ports are free,
//     or that etcd is reachable. Those are checked where they are used.
//   - It does not reload: a changed file takes effect when it is loaded
//     again; a changed password file likewise.
//   - The bootstrap section only seeds the DCS `config` key. After that the
//     DCS copy (ParseDynamicJSON) is authoritative, and the agent must
//     re-check the watchdog margin against it (Watchdog.ValidateTiming),
//     since Config.Validate only sees the bootstrap values.
//   - Validate checks a Config as it is; it does not apply defaults, so a
//     Config built in code must set every field the file would have
//     defaulted (notably Postgres.UsePgRewind and RunAs).
package config
