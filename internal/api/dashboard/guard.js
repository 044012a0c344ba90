// certmail's guard for the asynqmon dashboard, which builds the address of a
// single-task action (Run, Delete, Archive, Cancel) and of a queue's Pause
// and Resume by putting the task id and the queue name into the path as they
// are. The browser would resolve a "." or ".." segment, cut the path at "?"
// or "#", split it at "\", drop a space or control character that ends it
// and tabs and newlines anywhere in it, and the server would decode a "%":
// the action would reach other tasks or another queue. Such a request is
// not sent; the operator is told what to use instead.
//
// asynqmon's page also shows nothing when an action fails (it only logs to
// the browser's console). For an action the server answers with anything
// but 2xx, the guard shows why in the same message: the problem's detail
// when the answer is certmail's (application/problem+json), else a fixed
// sentence with the status (asynqmon's own answers are plain text, not
// shown as they are).
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

  // maxShown is the most characters of a problem's detail that are shown.
  var maxShown = 600;

  // changing reports whether a request of method to url changes something
  // under the dashboard's API.
  function changing(method, url) {
    method = String(method || "GET").toUpperCase();
    return method !== "GET" && method !== "HEAD" && String(url).indexOf("/api/") >= 0;
  }

  // failure returns what to tell the operator about an action answered
  // status, with the Content-Type type and body (text, or an object when
  // already parsed), or "" when it went through.
  function failure(status, type, body) {
    if (status >= 200 && status < 300) return "";
    if (status === 0) {
      return "This action got no answer: the connection to the server failed. Reload the page to see whether it was done.";
    }
    if (/^application\/problem\+json/i.test(type || "")) {
      var p = body;
      if (typeof p === "string") {
        try { p = JSON.parse(p); } catch (e) { p = null; }
      }
      if (p && typeof p.detail === "string" && p.detail !== "") {
        var d = p.detail.length > maxShown ? p.detail.slice(0, maxShown) + "\u2026" : p.detail;
        if (typeof p.request_id === "string" && p.request_id.length <= 64) d += " (request_id " + p.request_id + ")";
        return "This action failed (" + status + "): " + d;
      }
    }
    return "This action failed: the server answered " + status + " without a reason to show here " +
      "(the browser's console has asynqmon's). Reload the page to see the tasks and queues as they are now.";
  }

  // told shows the failure of an answered XMLHttpRequest, if any.
  function told(x) {
    var body = null;
    if (x.responseType === "" || x.responseType === "text") body = x.responseText;
    else if (x.responseType === "json") body = x.response;
    var text = failure(x.status, x.getResponseHeader("Content-Type"), body);
    if (text) tell(text);
  }

  function tell(text) {
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
    el.firstChild.textContent = text;
  }

  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    if (unsafe(method, url)) {
      tell(message);
      throw new Error(message);
    }
    this.certmailAction = changing(method, url);
    if (this.certmailAction && !this.certmailWatched) {
      this.certmailWatched = true;
      this.addEventListener("loadend", function () {
        if (this.certmailAction) told(this);
      });
    }
    return open.apply(this, arguments);
  };

  if (window.fetch) {
    var fetch = window.fetch;
    window.fetch = function (input, init) {
      var url = typeof input === "string" ? input : input && input.url;
      var method = (init && init.method) || (input && typeof input !== "string" && input.method) || "GET";
      if (unsafe(method, url)) {
        tell(message);
        return Promise.reject(new TypeError(message));
      }
      var answer = fetch.apply(this, arguments);
      if (!changing(method, url)) return answer;
      return answer.then(function (res) {
        if (!res.ok) {
          res.clone().text().then(function (body) {
            tell(failure(res.status, res.headers.get("Content-Type"), body));
          }, function () {
            tell(failure(res.status, "", null));
          });
        }
        return res;
      }, function (err) {
        tell(failure(0, "", null));
        throw err;
      });
    };
  }
})();
