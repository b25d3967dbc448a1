//go:build tools

// Package tools keeps helm in go.mod for `go mod tidy`.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
