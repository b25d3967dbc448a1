//go:build tools

// Package tools keeps versitygw (the S3-compatible server of the storage e2e tests) in go.mod for `go mod tidy`.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
