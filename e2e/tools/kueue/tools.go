//go:build tools

// Package tools keeps Kueue in go.mod for `go mod tidy`.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
