package dcs

import "errors"

// Sentinel errors. Implementations wrap their failures with %w so that
// callers test with errors.Is.
var (
	// ErrUnavailable: the store could not be reached or did not answer within
	// the call's deadline. Nothing is known about whether a write happened.
	ErrUnavailable = errors.New("dcs unavailable")
	// ErrConflict: a compare-and-swap or create-only write lost: the key
	// changed (or exists) since it was read. Re-read and decide again.
	ErrConflict = errors.New("dcs conflict: the key changed since it was read")
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("dcs key not found")
	// ErrLeaseLost: this member's session lease expired or was revoked; every
	// key attached to it (member key, leader key) is gone.
	ErrLeaseLost = errors.New("dcs session lease lost")
	// ErrNotLeader: the leader key is not held by this member (any more).
	ErrNotLeader = errors.New("dcs leader key is not ours")
)
