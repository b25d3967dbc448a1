//go:build tools

// Package tools keeps kwok in go.mod for `go mod tidy`.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
