package worker

import (
	"sync"

	"go.uber.org/zap"

	"github.com/certmail/certmail/internal/account"
	"github.com/certmail/certmail/internal/digicert"
)

// keyFile reads an account's API key again from the file it came from
// (DIGICERT_API_KEY_FILE or an accounts file's api_key_file), so that
// replacing the file is enough to end an auth pause, without a restart. It
// is read before each probe of the paused account, and after each call
// DigiCert refused for the key: a worker that had not read a new key yet
// then takes it and tries again, without pausing the account again. A key
// given directly (DIGICERT_API_KEY) has no keyFile: nil, which reload
// accepts.
type keyFile struct {
	account string
	path    string
	client  *digicert.Client
	log     *zap.Logger

	mu  sync.Mutex     // one reload at a time
	key account.Secret // the key the client sends
}

// reload reads the file and, when it holds a valid key other than the one
// in use, gives it to the client: the calls that start from then on send
// it, and changed is true. When the file cannot be read or its key is
// invalid (the checks of the start), the key in use is kept and the problem
// logged at WARN; neither the log nor the error holds what the file holds.
func (k *keyFile) reload() (changed bool) {
	if k == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := account.ReadKeyFile(k.path)
	switch {
	case err == nil && key == k.key:
		return false
	case err == nil:
		if err = k.client.SetAPIKey(key.Reveal()); err == nil {
			k.key = key
			k.log.Info("the API key file holds a new key; calls use it from now on",
				zap.String("account", k.account), zap.String("key_file", k.path))
			return true
		}
	}
	k.log.Warn("could not take the API key from its file again; the key in use is kept",
		zap.String("account", k.account), zap.String("key_file", k.path), zap.Error(err))
	return false
}
