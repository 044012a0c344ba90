package cli_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certmail/certmail/internal/certmailtest"
	"github.com/certmail/certmail/internal/cli"
	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/tasks"
)

// fake-digicert refuses an id that is not positive, an id given to two of
// its order and domain lists, and a key given both as a full and as a View
// Only key: exit 2, one line naming the flag, never the key.
func TestFakeDigicertRefusesBadIDsAndKeys(t *testing.T) {
	t.Parallel()
	const key = "fake-secret-key-42"
	keyFile := filepath.Join(t.TempDir(), "view-only-key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--ov-orders=3001,0"}, "--ov-orders: 0 is not an id"},
		{[]string{"--ev-orders=-3"}, "--ev-orders: -3 is not an id"},
		{[]string{"--domains=0"}, "--domains: 0 is not an id"},
		{[]string{"--orders=0"}, "--orders: 0 is not an id"},
		{[]string{"--certs=-1"}, "--certs: -1 is not an id"},
		{[]string{"--ov-orders=x"}, "--ov-orders"},
		{[]string{"--orders=5", "--ov-orders=5"}, "--ov-orders: 5 is given to --orders too"},
		{[]string{"--ov-orders=5", "--ev-orders=6,5"}, "--ev-orders: 5 is given to --ov-orders too"},
		{[]string{"--ev-orders=7", "--domains=7"}, "--domains: 7 is given to --ev-orders too"},
		{[]string{"--view-only-key=other," + key}, "--view-only-key: a key --api-key or --api-key-file gives too"},
		{[]string{"--view-only-key-file=" + keyFile}, "--view-only-key-file: a key --api-key or --api-key-file gives too"},
	} {
		args := append([]string{"fake-digicert", "--addr=127.0.0.1:0", "--api-key=" + key}, tt.args...)
		r := runFor(5*time.Second, args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, %q; want 2 and one line saying %q", tt.args, r.code, r.stderr, tt.want)
		}
		if strings.Contains(r.stderr+r.stdout, key) {
			t.Errorf("%v: the output holds the key: %q", tt.args, r.stderr)
		}
	}
	// A certificate may share its id with an order, and a View Only key
	// alone is enough to start.
	for _, args := range [][]string{{"--api-key=k", "--orders=5", "--certs=5"}, {"--view-only-key=v"}} {
		if r := runFor(time.Second, append([]string{"fake-digicert", "--addr=127.0.0.1:0"}, args...)...); r.code != 0 {
			t.Errorf("%v: exit %d, %q; want it served until stopped", args, r.code, r.stderr)
		}
	}
}

// The orders, domains and View Only keys of fake-digicert's flags behave
// as the help says: OV and EV orders pending, each with one domain of the
// order's id waiting for email, resent per domain; domains on their own
// for resend-domain-dcv; a View Only key reads and is refused every PUT.
// The notes at start name them, never a key.
func TestFakeDigicertOrdersFromFlags(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	stdout := &certmailtest.Output{}
	code := make(chan int, 1)
	go func() {
		code <- cli.Main(ctx, []string{"fake-digicert", "--addr=127.0.0.1:0", "--api-key=full-key", "--view-only-key=view-key",
			"--ov-orders=3001,3003", "--ev-orders=3002", "--domains=7001", "--orders=1001"}, strings.NewReader(""), stdout, &certmailtest.Output{})
	}()
	t.Cleanup(func() {
		stop()
		<-code
	})
	listening := regexp.MustCompile(`\bat (http://127\.0\.0\.1:[0-9]+/services/v2)\n`)
	notes := []string{
		"  OV orders 3001, 3003: pending, each with one domain of the order's id waiting for validation by email\n",
		"  EV orders 3002: pending, each with one domain of the order's id waiting for validation by email\n",
		"  domains on their own (resend-domain-dcv): 7001\n",
		"  1 View Only key(s): every PUT they send is answered 403 access_denied|missing_permission\n",
	}
	var base string
	// The notes are written one by one after the address: wait for all.
	certmailtest.WaitFor(t, 20*time.Second, func() bool {
		out := stdout.String()
		m := listening.FindStringSubmatch(out)
		if m == nil {
			return false
		}
		base = m[1]
		for _, want := range notes {
			if !strings.Contains(out, want) {
				return false
			}
		}
		return true
	}, func() string {
		return fmt.Sprintf("stdout %q, want the address and the notes %q", stdout.String(), notes)
	})
	if out := stdout.String(); strings.Contains(out, "full-key") || strings.Contains(out, "view-key") {
		t.Errorf("stdout holds a key: %q", out)
	}
	client := func(key string) *digicert.Client {
		c, err := digicert.New(digicert.Config{BaseURL: base, APIKey: key, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	full, view := client("full-key"), client("view-key")
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for id, orgs := range map[int64]int{3001: 1, 3002: 1, 3003: 1, 1001: 0} {
		v, _, err := full.OrderValidation(rctx, id)
		pending := v.PendingEmailDomains()
		if err != nil || !v.Pending() || v.OrganizationValidations != orgs || len(pending) != 1 || pending[0].DomainID != id {
			t.Errorf("order %d: %+v, %v; want pending, %d organization validations, one domain %d pending by email", id, v, err, orgs, id)
		}
	}
	empty, err := tasks.ResendDomainDCV{DomainID: 1}.DigiCertBody()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{3001, 3002, 7001} {
		if res, err := full.ResendDomainDCVEmails(rctx, id, empty); err != nil || res.Status != 204 {
			t.Errorf("domain %d: %d, %v; want 204", id, res.Status, err)
		}
	}
	resend, err := tasks.ResendDCV{OrderID: 3001}.DigiCertBody()
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *digicert.APIError
	if _, err := full.ResendDCVEmails(rctx, 3001, resend); !errors.As(err, &apiErr) || !apiErr.HasFullCode("invalid_order_type|dv_only") {
		t.Errorf("resend through the OV order: %v, want invalid_order_type|dv_only", err)
	}
	if _, err := full.ResendDomainDCVEmails(rctx, 7002, empty); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("domain not given: %v, want 404", err)
	}

	if v, _, err := view.OrderValidation(rctx, 3001); err != nil || !v.Pending() {
		t.Errorf("View Only read: %+v, %v", v, err)
	}
	for name, call := range map[string]func() (digicert.Result, error){
		"resend-domain-dcv": func() (digicert.Result, error) { return view.ResendDomainDCVEmails(rctx, 7001, empty) },
		"resend-dcv":        func() (digicert.Result, error) { return view.ResendDCVEmails(rctx, 1001, resend) },
	} {
		_, err := call()
		if !errors.As(err, &apiErr) || apiErr.Status != 403 || !apiErr.HasFullCode("access_denied|missing_permission") ||
			digicert.Classify(err) != digicert.ClassPermanent {
			t.Errorf("View Only %s: %v (class %v), want 403 access_denied|missing_permission, permanent", name, err, digicert.Classify(err))
		}
	}
}

// The help names the new flags and what they do.
func TestFakeDigicertHelp(t *testing.T) {
	t.Parallel()
	r := run(t, "fake-digicert", "--help")
	for _, want := range []string{"--view-only-key=", "--view-only-key-file=", "--ov-orders=", "--ev-orders=", "--domains=",
		"access_denied|missing_permission", "pre-validation"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help does not say %q:\n%s", want, r.stdout)
		}
	}
}
