package digicert_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/certmail/certmail/internal/digicert"
	"github.com/certmail/certmail/internal/digicert/digicerttest"
)

// Example replaces an order's additional emails on a fake CertCentral, then
// shows how a failure is classified.
func Example() {
	fake := digicerttest.New(digicerttest.Config{APIKeys: []string{"example-key"}})
	fake.AddOrder(123)
	srv := httptest.NewServer(fake)
	defer srv.Close()

	client, err := digicert.New(digicert.Config{BaseURL: srv.URL + "/services/v2", APIKey: "example-key"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.CloseIdleConnections()
	ctx := context.Background()

	res, err := client.SetAdditionalEmails(ctx, 123, []byte(`{"additional_emails":["jill@example.com"]}`))
	fmt.Println(res.Status, res.Attempts, err)
	emails, _ := fake.AdditionalEmails(123)
	fmt.Println(emails)

	_, err = client.SetAdditionalEmails(ctx, 456, []byte(`{"additional_emails":[]}`))
	fmt.Println(digicert.Classify(err), digicert.ErrorCode(err))
	fmt.Println(err)
	// Output:
	// 204 1 <nil>
	// [jill@example.com]
	// permanent not_found|order
	// digicert additional-emails: 404 not_found|order: Order not found.
}
