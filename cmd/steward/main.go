// Command steward is the HA failover manager: the agent that runs next to
// each database (steward agent) and the operator CLI (list, switchover, ...).
//
// This is the only package that reads the environment and flags, builds the
// logger, installs signal handling and maps errors to exit codes:
//
//	0  success
//	1  the operation failed or was refused (etcd unreachable, switchover
//	   refused, confirmation declined); nothing was changed
//	2  bad usage or an invalid configuration file; nothing was changed
//	3  the request was made but its outcome is unknown (no outcome within
//	   --timeout, or interrupted while waiting): check steward list/history
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitUnknown = 3
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// unknownErr: the request was made, but whether it took effect is not known.
func unknownErr(err error) error { return &exitError{code: exitUnknown, err: err} }

// env is what a command may take from the process: the only door to the
// outside world, so that tests can run commands in-process.
type env struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	// ctx ends the commands that wait (nil: never); SIGINT/SIGTERM end
	// them too.
	ctx context.Context
}

// context returns the environment's context (Background when unset).
func (e *env) context() context.Context {
	if e.ctx == nil {
		return context.Background()
	}
	return e.ctx
}

func main() {
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	os.Exit(run(e, os.Args[1:]))
}

func run(e *env, args []string) int {
	root := newRootCmd(e)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(e.stderr, "steward: "+err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsage(err) {
		fmt.Fprintln(e.stderr, "Run 'steward --help' for usage.")
		return exitUsage
	}
	return exitFailure
}

// isUsage recognises cobra's own usage errors (unknown command, wrong number
// of arguments), which it returns as plain errors.
func isUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command ", "accepts ", "requires at least ", "requires at most ", "invalid argument "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
