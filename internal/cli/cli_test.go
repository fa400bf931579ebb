package cli

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestInterleave(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"name", "-n", "ns"}, []string{"-n", "ns", "name"}},
		{[]string{"-n", "ns", "name"}, []string{"-n", "ns", "name"}},
		{[]string{"name", "--url=http://x", "--agent-id", "a"}, []string{"--url=http://x", "--agent-id", "a", "name"}},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := interleave(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("interleave(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestUsageAndBadCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "kubectl agentcred rotate NAME") {
		t.Fatalf("no args: code %d, %q", code, out.String())
	}
	if code := Main(context.Background(), []string{"status"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "NAME is required") {
		t.Fatalf("status without NAME: code %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := Main(context.Background(), []string{"check", "--key", "ak_x", "--url", "http://127.0.0.1:1"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "error:") {
		t.Fatalf("check against nothing: code %d, %q", code, errOut.String())
	}
}
