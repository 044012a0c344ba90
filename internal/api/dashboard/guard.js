// certmail's guard for the asynqmon dashboard, which builds the address of a
// single-task action (Run, Delete, Archive, Cancel) and of a queue's Pause
// and Resume by putting the task id and the queue name into the path as they
// are. The browser would resolve a "." or ".." segment, cut the path at "?"
// or "#", split it at "\", drop a space or control character that ends it
// and tabs and newlines anywhere in it, and the server would decode a "%":
// the action would reach other tasks or another queue. Such a request is
// not sent; the operator is told what to use instead.
(function () {
  "use strict";
  var message = "certmail refused this action: the task id or queue name holds a character the dashboard " +
    "cannot put in an address (. or .. alone, / \\ ? # %, a control character, a space at its end), so it would act on other tasks. " +
    "Select the task's checkbox and use the bulk action above the table, or use " +
    "certmail dlq delete / certmail dlq requeue.";

  // unsafe reports whether a request of method to the raw url, as the page
  // built it, changes something under the dashboard's API through an
  // address that does not say what it names.
  function unsafe(method, url) {
    url = String(url);
    method = String(method || "GET").toUpperCase();
    if (method === "GET" || method === "HEAD") return false;
    var i = url.indexOf("/api/");
    if (i < 0) return false;
    var path = url.slice(i + 4);
    if (/[?#%\\]/.test(path)) return true;
    // The browser drops the spaces and control characters that end an
    // address (a Delete's ends with the task id), and tabs and newlines
    // anywhere in it.
    if (/[\x00-\x1f\x7f]| $/.test(path)) return true;
    var segs = path.split("/");
    for (var j = 0; j < segs.length; j++) {
      if (segs[j] === "." || segs[j] === "..") return true;
    }
    return false;
  }

  function tell() {
    var id = "certmail-guard-message";
    var el = document.getElementById(id);
    if (!el) {
      el = document.createElement("div");
      el.id = id;
      el.setAttribute("role", "alert");
      var close = document.createElement("button");
      close.type = "button";
      close.textContent = "\u00d7";
      close.setAttribute("aria-label", "close");
      close.onclick = function () { el.remove(); };
      el.appendChild(document.createElement("span"));
      el.appendChild(close);
      (document.body || document.documentElement).appendChild(el);
    }
    el.firstChild.textContent = message;
  }

  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    if (unsafe(method, url)) {
      tell();
      throw new Error(message);
    }
    return open.apply(this, arguments);
  };

  if (window.fetch) {
    var fetch = window.fetch;
    window.fetch = function (input, init) {
      var url = typeof input === "string" ? input : input && input.url;
      var method = (init && init.method) || (input && typeof input !== "string" && input.method) || "GET";
      if (unsafe(method, url)) {
        tell();
        return Promise.reject(new TypeError(message));
      }
      return fetch.apply(this, arguments);
    };
  }
})();
