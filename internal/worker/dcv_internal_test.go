package worker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/digicert"
)

// A retryable failure after a refusal for good keeps its own code, status
// and class (retried, not dead-lettered); its reason names both domains
// within maxReasonMessage and its error chain within maxErrorDetail,
// however long DigiCert's messages, the refusal's part within
// maxRefusalNote. Once the retries run out, the dead letter's reason is
// the same.
func TestRefusalNamedAfterARetryableFailureIsBounded(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 3000)
	refusal := permanent("invalid_value:email_array", 400, &digicert.APIError{Endpoint: "domain-dcv-emails", Status: 400,
		Errors: []digicert.ErrorEntry{{Code: "invalid_value:email_array", Message: "Invalid email\naddress. " + long}}})
	retryable := transient("http_500", 500, time.Minute, &digicert.APIError{Endpoint: "domain-dcv-emails", Status: 500,
		Errors: []digicert.ErrorEntry{{Code: "server_error", Message: "Try again. " + long}}})

	err := afterRefusal(aboutDomain(retryable, 104), aboutDomain(refusal, 102))
	var te *taskError
	if !errors.As(err, &te) || te.code != "http_500" || te.status != 500 || te.class != classTransient ||
		te.retryAfter != time.Minute || errors.Is(err, asynq.SkipRetry) || !IsFailure(err) {
		t.Fatalf("err %#v, want the retryable failure, transient", err)
	}
	const note = "; domain 102 refused for good earlier: invalid_value:email_array: "
	checkReason := func(what, s string, limit int, prefix, refusal string) {
		t.Helper()
		i := strings.Index(s, note+refusal)
		if len(s) > limit || !strings.HasPrefix(s, prefix) || i < 0 || len(s[i+2:]) > maxRefusalNote ||
			!strings.HasSuffix(s, "xx…") || strings.ContainsAny(s, "\n") {
			t.Errorf("%s (%d bytes) %q", what, len(s), s)
		}
	}
	checkReason("reason", te.message(), maxReasonMessage, "domain 104: Try again. xxx", "Invalid email address. xxx")
	checkReason("detail", te.detail(), maxErrorDetail, "domain 104: digicert domain-dcv-emails: 500",
		"digicert domain-dcv-emails: 400 invalid_value:email_array: Invalid email address. xxx")
	var apiErr *digicert.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 500 {
		t.Errorf("the error chain leads to %v, want the retryable failure", apiErr)
	}

	last := exhausted(err)
	var le *taskError
	if !errors.As(last, &le) || le.code != "http_500" || le.class != classPermanent || le.message() != te.message() {
		t.Errorf("retries run out: %#v, want http_500 with the same reason", last)
	}

	// A wait (here a stopping worker's hand-back) stays a wait.
	stop := &taskError{code: codeWorkerStopping, class: classWait, retryAfter: time.Second, err: errors.New("not sent to DigiCert: the worker is stopping")}
	err = afterRefusal(aboutDomain(stop, 104), aboutDomain(refusal, 102))
	if !errors.As(err, &te) || te.class != classWait || IsFailure(err) || errors.Is(err, asynq.SkipRetry) ||
		!strings.HasPrefix(te.Error(), "worker_stopping: domain 104: not sent to DigiCert: the worker is stopping"+note+"Invalid email address. xxx") {
		t.Errorf("wait after a refusal: %v, want a wait naming the refusal", err)
	}

	// Without a refusal before it, the failure is left as it is.
	if err := afterRefusal(retryable, nil); err != retryable {
		t.Errorf("afterRefusal(err, nil) = %v, want err itself", err)
	}
}
