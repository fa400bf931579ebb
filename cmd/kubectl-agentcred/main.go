// Command kubectl-agentcred is agentcred's CLI, usable as a kubectl plugin
// (`kubectl agentcred …`) when it is on PATH: rotate, status, key, check.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/agrenting/agentcred/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
