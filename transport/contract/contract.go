// Package contract holds the REST contract tests: real HTTP against an
// engine on each store, every response validated against docs/openapi.json
// with kin-openapi. It has no code of its own beyond this comment.
package contract
