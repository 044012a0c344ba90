package api_test

import (
	"strings"
	"testing"

	"github.com/certmail/certmail/internal/api"
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	const tok = "k3J9-q8Zr-77aa-b0c1"
	tests := []struct {
		entry string
		role  api.Role
		err   string // part of the error; "" for none
	}{
		{tok, api.RoleOperator, ""},
		{tok + " producer", api.RoleProducer, ""},
		{"  " + tok + "\treader  ", api.RoleReader, ""},
		{tok + " operator", api.RoleOperator, ""},
		{tok + " reader # the on-call dashboard", api.RoleReader, ""},
		{tok + "   #no role", api.RoleOperator, ""},
		{"#" + tok + " producer", api.RoleProducer, ""},
		{"producer " + tok, "", "the role comes after the token"},
		{tok + " admin", "", "not a role"},
		{tok + " producer extra", "", "3 words"},
		{"   ", "", "empty"},
		{"short-token", "", "fewer than 16"},
		{"short-token producer", "", "fewer than 16"},
		{"replace-me-with-a-long-random-token", "", "placeholder"},
		{"replace-with-a-long-random-token reader", "", "placeholder"},
		{"tökén-with-ümlauts-0123", "", "printable ASCII"},
		{strings.Repeat("x", 4097), "", "longer than 4096"},
	}
	for _, tt := range tests {
		got, err := api.ParseToken(tt.entry)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseToken(%.40q): %v", tt.entry, err)
		case tt.err == "" && (got.Role != tt.role || got.Secret.Reveal() != strings.Fields(tt.entry)[0]):
			t.Errorf("ParseToken(%.40q) = role %q, secret %q", tt.entry, got.Role, got.Secret.Reveal())
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseToken(%.40q): error %v, want %q", tt.entry, err, tt.err)
		case err != nil:
			for _, word := range strings.Fields(tt.entry) {
				if len(word) >= 10 && strings.Contains(err.Error(), word) {
					t.Errorf("ParseToken(%.40q): the error repeats %q: %v", tt.entry, word, err)
				}
			}
		}
	}
}
