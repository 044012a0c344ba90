// Package buildinfo holds what the build stamps into the binary: its version.
package buildinfo

// Version is the release this binary was built from. `make build` sets it with
// -ldflags "-X github.com/certmail/certmail/internal/buildinfo.Version=..."; a
// plain `go build` leaves it at "dev".
var Version = "dev"

// UserAgent is the User-Agent certmail sends to DigiCert.
func UserAgent() string { return "certmail/" + Version }
