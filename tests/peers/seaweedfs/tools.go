//go:build tools

// Package tools pins SeaweedFS for tests/peers/seaweedfs.py, which builds its `weed` command
// with `go build github.com/seaweedfs/seaweedfs/weed` from this module: `go install` of that
// command refuses because SeaweedFS's own go.mod carries `replace` directives, so this module
// requires it at a pinned version and carries the same `replace` line. The import keeps
// `go mod tidy` from dropping the requirement.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
