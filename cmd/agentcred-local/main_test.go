package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/agrenting/agentcred/internal/operator"
)

func TestAuthCurl(t *testing.T) {
	plain := operator.DefaultOptions()
	plain.AuthAddr = ":8082"
	if got, want := authCurl(&plain), "# plain HTTP on loopback (installed in a cluster, the endpoint serves TLS)\n  "+`curl -i -H "X-API-Key: $KEY" http://127.0.0.1:8082`; got != want {
		t.Errorf("authCurl = %s, want %s", got, want)
	}
	withTLS := plain
	withTLS.AuthAddr, withTLS.AuthTLSCertFile, withTLS.AuthTLSKeyFile = "127.0.0.1:18443", "/certs/tls.crt", "/certs/tls.key"
	if got, want := authCurl(&withTLS), `curl -i --cacert /certs/tls.crt -H "X-API-Key: $KEY" https://127.0.0.1:18443`; got != want {
		t.Errorf("authCurl with TLS = %s, want %s", got, want)
	}
}

func TestStaleKubeconfig(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if _, stale := staleKubeconfig(kc); stale {
		t.Fatal("a kubeconfig without a pid file is not from make run")
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(strconv.Itoa(os.Getpid()) + "\n")
	if _, stale := staleKubeconfig(kc); stale {
		t.Fatal("a live owner was called gone")
	}
	write("999999999\n") // above any pid_max
	if pid, stale := staleKubeconfig(kc); !stale || pid != 999999999 {
		t.Fatalf("a gone owner: %d %v", pid, stale)
	}
	write("garbage")
	if _, stale := staleKubeconfig(kc); stale {
		t.Fatal("an unreadable pid file counted as stale")
	}
}

// TestMakeRunListensOnLoopbackByDefault: make run's plain-HTTP auth
// endpoint, its metrics and its probes bind 127.0.0.1 unless a flag says
// otherwise (the review found them on every interface while the banner said
// loopback); an explicit address is kept.
func TestMakeRunListensOnLoopbackByDefault(t *testing.T) {
	o, err := operator.ParseFlagsOver(localDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"auth": o.AuthAddr, "metrics": o.MetricsAddr, "probes": o.ProbeAddr} {
		if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
			t.Errorf("%s listens on %q by default, want 127.0.0.1", name, addr)
		}
	}
	if o.GRPCAuthAddr != "0" || o.PprofAddr != "0" {
		t.Errorf("gRPC %q and pprof %q must stay off by default", o.GRPCAuthAddr, o.PprofAddr)
	}
	o, err = operator.ParseFlagsOver(localDefaults(), []string{"--auth-bind-address=:18082"})
	if err != nil || o.AuthAddr != ":18082" {
		t.Fatalf("an explicit --auth-bind-address was not kept: %q %v", o.AuthAddr, err)
	}
	// The manager itself keeps its in-cluster defaults.
	if m := operator.DefaultOptions(); m.AuthAddr != ":8082" {
		t.Fatalf("the manager's default auth address is %q, want :8082", m.AuthAddr)
	}
}
