// Package deptest holds the module's import test: every package of the
// module has an entry in its table (rules_test.go) saying which of the
// module's packages it may import and which other dependencies it must
// not have, each with the reason; the test fails on a violation, on a
// package without an entry, and on an entry or rule that names a package
// that no longer exists. docs/architecture.md is the map it enforces.
//
// It needs only the go command (`go list`), no privileges. The package has
// no code of its own outside its tests.
package deptest
