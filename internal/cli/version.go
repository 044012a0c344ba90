package cli

import (
	"fmt"
	"runtime"

	"github.com/certmail/certmail/internal/buildinfo"
)

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints "certmail <version> (<go version>)".
func (c *VersionCmd) Run(env *Env) error {
	_, err := fmt.Fprintf(env.Stdout, "certmail %s (%s)\n", buildinfo.Version, runtime.Version())
	return err
}
