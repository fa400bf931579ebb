// Command manager runs agentcred: the AgentCredential controller, the
// admission webhook and the auth endpoint, together (the default) or the auth
// endpoint alone. Flags are listed with --help and in the README.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/agrenting/agentcred/internal/operator"
)

func run(args []string) error {
	o, err := operator.ParseFlags(args)
	if err != nil {
		return err
	}
	operator.SetupLogger(o)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the cluster: %w", err)
	}
	return operator.Run(ctrl.SetupSignalHandler(), cfg, o)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "agentcred:", err)
		os.Exit(1)
	}
}
