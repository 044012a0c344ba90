package enqueue_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/enqueue"
	"github.com/certmail/certmail/tasks"
)

// Rules with queues but no accounts mean the account default alone, as the
// Rules documentation says, whatever the queues are.
func TestCheckNoAccountsWithQueuesGiven(t *testing.T) {
	t.Parallel()
	req := enqueue.Request{Type: tasks.TypeSetEmails, Payload: []byte(`{"order_id": 1, "additional_emails": []}`)}
	if _, err := enqueue.Check(req, enqueue.Rules{Queues: []string{"default"}}); err != nil {
		t.Fatalf("Check with Queues [default] and no Accounts: %v, want accepted (account default)", err)
	}
}

// Exactly maxListed (10) accounts are all listed, with no "and 0 more".
func TestUnknownAccountExactlyTenListed(t *testing.T) {
	t.Parallel()
	var accounts []string
	for i := range 10 {
		accounts = append(accounts, fmt.Sprintf("acct%02d", i))
	}
	_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeResendDCV, Payload: []byte(`{"order_id": 1, "account": "mars"}`)},
		enqueue.Rules{Accounts: accounts})
	want := "account: unknown account; the configured accounts are acct00, acct01, acct02, acct03, acct04, acct05, acct06, acct07, acct08, acct09"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("Check: %v, want it to end with %q", err, want)
	}
}

// A malformed account is reported once, not also as unknown.
func TestMalformedAccountReportedOnce(t *testing.T) {
	t.Parallel()
	_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeSetEmails,
		Payload: []byte(`{"order_id": 1, "additional_emails": [], "account": "Not A Name!"}`)}, enqueue.Rules{})
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Check: %v, want a *tasks.ValidationError", err)
	}
	n := 0
	for _, fe := range ve.Errors {
		if fe.Field == "account" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("Check: %d problems for account, want 1: %v", n, ve.Errors)
	}
}

// An unknown account is counted even when the payload's other problems
// fill the list: the count of problems left out includes it.
func TestUnknownAccountCountedBeyondTheList(t *testing.T) {
	t.Parallel()
	const bad = 25
	emails := make([]string, bad)
	for i := range emails {
		emails[i] = fmt.Sprintf(`"not-an-address-%d"`, i)
	}
	payload := `{"order_id": 1, "additional_emails": [` + strings.Join(emails, ",") + `], "account": "us"}`
	_, err := enqueue.Check(enqueue.Request{Type: tasks.TypeSetEmails, Payload: []byte(payload)}, enqueue.Rules{})
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Check: %v, want a *tasks.ValidationError", err)
	}
	if got := len(ve.Errors) - 1 + ve.Omitted; got != bad+1 || ve.Omitted == 0 {
		t.Fatalf("Check: %d problems (%d listed, %d left out), want %d (the addresses and the account): %v",
			got, len(ve.Errors)-1, ve.Omitted, bad+1, ve.Errors)
	}
}
