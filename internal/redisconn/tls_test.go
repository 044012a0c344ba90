package redisconn_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/redistest"
)

// TestRedissLines: over rediss://, with the private CA given through
// SSL_CERT_FILE (Go's rule on Linux, read once per process: each command
// runs in a process of its own), a command reaches a Redis that asks for no
// client certificate. A Redis that asks for one (Redis's default,
// tls-auth-clients yes), and a CA not trusted, fail the command with one
// line that says TLS failed and how certmail trusts a CA and that it sends
// no client certificate, not that Redis did not answer.
func TestRedissLines(t *testing.T) {
	t.Parallel()
	certs := newTestCerts(t)
	otherCA := newTestCerts(t).caFile
	noClientCert := startTLSRedis(t, certs, "no")
	clientCert := startTLSRedis(t, certs, "yes")
	const tlsAdvice = "; the TLS connection to Redis at "
	for _, tc := range []struct {
		name, addr, caFile string
		code               int
		want               []string
	}{
		{"no client certificate asked", noClientCert, certs.caFile, 0, nil},
		{"client certificate asked", clientCert, certs.caFile, 1,
			[]string{"certificate required", tlsAdvice, "sends no client certificate", "tls-auth-clients no or optional"}},
		{"CA not trusted", noClientCert, otherCA, 1,
			[]string{"certificate signed by unknown authority", tlsAdvice, "SSL_CERT_FILE or SSL_CERT_DIR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runCLIChild(t, tc.caFile, "dlq", "list", "--redis-url", "rediss://localhost:"+tc.addr+"/3")
			if code != tc.code {
				t.Fatalf("exit %d, stderr %q; want %d", code, stderr, tc.code)
			}
			if tc.code == 0 {
				return
			}
			if strings.Count(stderr, "\n") != 1 || strings.Contains(stderr, "check that it is running") {
				t.Errorf("stderr %q: want one line, and no hint that Redis is down", stderr)
			}
			for _, w := range append(tc.want, "rediss://localhost:"+tc.addr+"/3") {
				if !strings.Contains(stderr, w) {
					t.Errorf("line %q does not say %q", stderr, w)
				}
			}
		})
	}
}

// childVar is the variable that makes TestCLIChild run a command.
const childVar = "CERTMAIL_TEST_CLI_CHILD"

// TestCLIChild is the process runCLIChild starts: it runs the command
// after -- on its command line and exits with its status.
func TestCLIChild(t *testing.T) {
	if os.Getenv(childVar) == "" {
		t.Skip("runs only as the process of a command (runCLIChild)")
	}
	os.Exit(cli.Main(context.Background(), flag.Args(), strings.NewReader(""), os.Stdout, os.Stderr))
}

// runCLIChild runs certmail args in a process of its own that trusts the
// certificate authority of caFile only (SSL_CERT_FILE), and returns its
// exit status and stderr.
func runCLIChild(t *testing.T, caFile string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestCLIChild$", "-test.count=1", "--"}, args...)...)
	cmd.Env = append(os.Environ(), childVar+"=1",
		"SSL_CERT_FILE="+caFile, "SSL_CERT_DIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("run %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// testCerts are a certificate authority's and a server's certificate for
// localhost and 127.0.0.1, signed by it, in files.
type testCerts struct{ caFile, certFile, keyFile string }

// newTestCerts makes them in the test's temporary directory.
func newTestCerts(t *testing.T) testCerts {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certmail test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCerts{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "redis.crt"), filepath.Join(dir, "redis.key")}
	for name, b := range map[string]*pem.Block{
		c.caFile: {Type: "CERTIFICATE", Bytes: caDER}, c.certFile: {Type: "CERTIFICATE", Bytes: der},
		c.keyFile: {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(name, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// startTLSRedis starts a redis-server that listens for TLS only, with
// certs, asking for client certificates as authClients says (its
// tls-auth-clients: yes, optional or no), and returns its port; stopped
// when the test ends. The test is skipped when redis-server has no TLS.
func startTLSRedis(t *testing.T, certs testCerts, authClients string) string {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certs.certFile, "--tls-key-file", certs.keyFile, "--tls-ca-cert-file", certs.caFile,
		"--tls-auth-clients", authClients, "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			if s := out.String(); strings.Contains(s, "TLS") && strings.Contains(s, "not supported") ||
				strings.Contains(s, "Bad directive") {
				t.Skipf("redis-server has no TLS support: %s", s)
			}
			t.Fatalf("redis-server with TLS exited: %s", out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return strconv.Itoa(port)
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server with TLS not listening on %s within 10s: %s", addr, out.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer that a process's stdout and stderr write
// to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
