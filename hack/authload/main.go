// Command authload measures the auth endpoint's throughput and latency over
// loopback HTTP with keep-alive, side by side with a bare net/http handler
// that only answers 200 (the ceiling), in one run on one machine.
//
//	go run ./hack/authload --credentials 100000 --duration 5s --runs 5
//
// It indexes N API keys and N user tokens (for three agents each) in the real
// authserver, starts it and the bare handler on 127.0.0.1, and drives each
// with the same closed-loop client (C connections, each sending its next
// request when the last one is answered), alternating targets run by run.
// It reports the median over runs of requests/s, p50 and p99 latency, and
// the median of the per-run ratios to the ceiling (each run measures both
// targets back to back, in alternating order). Every load loop is bounded by
// --duration.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/agrenting/agentcred/internal/authserver"
	"github.com/agrenting/agentcred/internal/credential"
	"github.com/agrenting/agentcred/internal/hashsecret"
	"github.com/agrenting/agentcred/internal/session"
)

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int64
}

func main() {
	n := flag.Int("credentials", 100000, "API keys (and as many user tokens) to index")
	duration := flag.Duration("duration", 5*time.Second, "length of each run")
	runs := flag.Int("runs", 5, "runs per target; the median is reported")
	conc := flag.Int("concurrency", 16, "connections, each with one request in flight")
	modes := flag.String("modes", "api_key,user_token,session", "credential kinds to measure")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	identity := flag.Bool("identity-ceiling", false, "also measure a bare handler that writes the same identity response headers as /auth/verify, to separate the cost of verifying from the cost of the headers")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}

	fmt.Printf("# authload: %d API keys + %d user tokens indexed, %d connections, %d runs of %s, GOMAXPROCS=%d, %s\n",
		*n, *n, *conc, *runs, *duration, runtime.GOMAXPROCS(0), runtime.Version())
	index, reqs := buildIndex(*n)
	srv, err := authserver.New(index, authserver.Options{FailureRate: 0, SessionTTL: time.Hour, Log: logr.Discard()})
	if err != nil {
		fail(err)
	}
	ring := &session.Keyring{Keys: []session.Key{mustKey()}}
	srv.SetKeyring(ring)
	reqs["session"] = sessions(reqs["api_key"], index, ring.Keys[0])
	verifyURL := serve(srv.Handler())
	bareURL := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))

	fmt.Println("| target | requests/s | p50 | p99 | ratio to bare | errors |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, mode := range splitComma(*modes) {
		headers := reqs[mode]
		if len(headers) == 0 {
			fail(fmt.Errorf("unknown mode %q", mode))
		}
		var bare, verify, echo []result
		var ratios, echoRatios []float64
		echoURL := ""
		if *identity {
			echoURL = serve(identityEcho(srv.Handler(), headers[0]))
		}
		for run := range *runs {
			// The ceiling gets the same requests, headers included. Each
			// run is a pair measured back to back, in alternating order,
			// so neither target always goes first; the ratio is taken
			// within the pair, where the machine's load was the same.
			var b, v result
			if run%2 == 0 {
				b = load(bareURL+"/", headers, *conc, *duration)
				v = load(verifyURL+"/auth/verify", headers, *conc, *duration)
			} else {
				v = load(verifyURL+"/auth/verify", headers, *conc, *duration)
				b = load(bareURL+"/", headers, *conc, *duration)
			}
			bare, verify = append(bare, b), append(verify, v)
			if b.rps > 0 {
				ratios = append(ratios, v.rps/b.rps)
			}
			if echoURL != "" {
				e := load(echoURL+"/", headers, *conc, *duration)
				echo = append(echo, e)
				if b.rps > 0 {
					echoRatios = append(echoRatios, e.rps/b.rps)
				}
			}
		}
		b, v := median(bare), median(verify)
		sort.Float64s(ratios)
		fmt.Printf("| bare 200 (ceiling) | %.0f | %s | %s | 1.00 | %d |\n", b.rps, b.p50, b.p99, b.errors)
		fmt.Printf("| /auth/verify %s | %.0f | %s | %s | **%.2f** (runs: %s) | %d |\n", mode, v.rps, v.p50, v.p99,
			ratios[len(ratios)/2], formatRatios(ratios), v.errors)
		if len(echo) > 0 {
			e := median(echo)
			sort.Float64s(echoRatios)
			fmt.Printf("| bare 200 + identity headers (%s) | %.0f | %s | %s | %.2f (runs: %s) | %d |\n", mode, e.rps, e.p50, e.p99,
				echoRatios[len(echoRatios)/2], formatRatios(echoRatios), e.errors)
		}
	}
}

// identityEcho answers 200 with the X-Auth-* response headers that h gives
// for one request with sample headers, without verifying anything.
func identityEcho(h http.Handler, sample http.Header) http.Handler {
	req := httptest.NewRequest(http.MethodGet, "/auth/verify", nil)
	req.Header = sample
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		fail(fmt.Errorf("sample request: status %d", rec.Code))
	}
	canned := http.Header{}
	for k, v := range rec.Header() {
		if strings.HasPrefix(k, "X-Auth-") {
			canned[k] = v
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		out := w.Header()
		for k, v := range canned {
			out[k] = v
		}
		w.WriteHeader(http.StatusOK)
	})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "authload:", err)
	os.Exit(1)
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func mustKey() session.Key {
	k, err := session.NewKey(time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))
	if err != nil {
		fail(err)
	}
	return k
}

// buildIndex indexes n API keys and n user tokens and returns request
// headers for a sample of 4,096 of each.
func buildIndex(n int) (*authserver.Index, map[string][]http.Header) {
	idx := authserver.NewIndex()
	reqs := map[string][]http.Header{}
	extra := []string{"bbbbbbbb-0000-4000-8000-000000000000", "cccccccc-0000-4000-8000-000000000000"}
	for i := range n {
		agent := fmt.Sprintf("aaaaaaaa-0000-4000-8000-%012d", i)
		key, _ := credential.Generate(credential.APIKey)
		idx.Put(authserver.EntryFromRecord(&hashsecret.Record{
			Credential: fmt.Sprintf("ns-%d/agent-%d", i%100, i), Type: "APIKey", AgentIDs: []string{agent},
			Current: hashsecret.Entry{Digest: credential.DigestOf(key)},
		}))
		token, _ := credential.Generate(credential.UserToken)
		idx.Put(authserver.EntryFromRecord(&hashsecret.Record{
			Credential: fmt.Sprintf("ns-%d/user-%d", i%100, i), Type: "UserToken", User: "user@example.com",
			AgentIDs: []string{extra[0], agent, extra[1]}, Current: hashsecret.Entry{Digest: credential.DigestOf(token)},
		}))
		if i%(max(1, n/4096)) == 0 {
			reqs["api_key"] = append(reqs["api_key"], http.Header{"X-Api-Key": {key}})
			reqs["user_token"] = append(reqs["user_token"], http.Header{"Authorization": {"Bearer " + token}, "X-Agent-Id": {agent}})
		}
	}
	idx.MarkSynced()
	return idx, reqs
}

func sessions(apiKeys []http.Header, idx *authserver.Index, key session.Key) []http.Header {
	now := time.Now()
	out := make([]http.Header, 0, len(apiKeys))
	for _, h := range apiKeys {
		k := h["X-Api-Key"][0]
		e, ok := idx.Lookup(credential.DigestOf(k), now)
		if !ok {
			fail(fmt.Errorf("indexed key not found"))
		}
		tok, err := session.Mint(session.Claims{AgentID: e.AgentIDs[0], KeyID: credential.KeyID(k), Credential: e.Credential,
			IssuedAt: now, ExpiresAt: now.Add(time.Hour)}, key)
		if err != nil {
			fail(err)
		}
		out = append(out, http.Header{"Authorization": {"Bearer " + tok}})
	}
	return out
}

func serve(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go func() { _ = (&http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}).Serve(ln) }()
	return "http://" + ln.Addr().String()
}

// load drives url from conc connections for d and returns the throughput and
// latency percentiles. Requests that are not 200 count as errors.
func load(url string, headers []http.Header, conc int, d time.Duration) result {
	transport := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var errs atomic.Int64
	latencies := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7)) //nolint:gosec // picks which test key to send, reproducibly
			lat := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if len(headers) > 0 {
					req.Header = headers[r.IntN(len(headers))]
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				lat = append(lat, time.Since(t0))
				if resp.StatusCode != http.StatusOK {
					errs.Add(1)
				}
			}
			latencies[c] = lat
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return result{errors: errs.Load()}
	}
	pct := func(p float64) time.Duration { return all[int(float64(len(all)-1)*p)].Round(time.Microsecond) }
	return result{rps: float64(len(all)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99), errors: errs.Load()}
}

func formatRatios(rs []float64) string {
	out := ""
	for i, r := range rs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.2f", r)
	}
	return out
}

func median(rs []result) result {
	sort.Slice(rs, func(i, j int) bool { return rs[i].rps < rs[j].rps })
	return rs[len(rs)/2]
}
