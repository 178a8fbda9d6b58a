// Package backends holds the database-neutral value types shared by the
// agent, the DCS records and the database implementations in its
// sub-packages (postgres, mysql).
//
// This package imports nothing but the standard library, so that the agent
// can use these types without importing a database driver.
package backends
