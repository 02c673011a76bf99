// WeChat JSAPI: inside WeChat, WeixinJSBridge opens the payment sheet. In sandbox
// mode (no WeChat) the parameters go to the sandbox's stand-in for the bridge. The
// sheet's answer is not authoritative (the wallet's callback is), but it says where to
// go: paid -> the status page; cancelled or failed -> the cancel form, which closes
// the payment so the status page does not keep waiting for it. Only the browser that
// started a plate payment gets that form; anyone else goes to the status page.
(function () {
  var form = document.getElementById("jsapi");
  if (!form) return;
  var params = {};
  Array.prototype.forEach.call(form.querySelectorAll("input[type=hidden]"), function (i) {
    params[i.name] = i.value;
  });
  var status = form.getAttribute("data-status");
  var done = function (res) {
    var msg = (res && res.err_msg) || "";
    var cancel = document.getElementById("cancel");
    if (cancel && /:(cancel|fail)$/.test(msg)) {
      HTMLFormElement.prototype.submit.call(cancel);
    } else {
      location.href = status;
    }
  };
  var bridge = form.getAttribute("data-bridge");
  function pay() {
    if (window.WeixinJSBridge) {
      window.WeixinJSBridge.invoke("getBrandWCPayRequest", params, done);
    } else if (bridge) {
      fetch(bridge, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params) })
        .then(function (r) { return r.json(); })
        .then(done, function () { location.href = status; });
    } else {
      document.getElementById("wechat-only").hidden = false;
    }
  }
  document.getElementById("wechat-pay").addEventListener("click", pay);
  if (window.WeixinJSBridge || bridge) {
    pay();
  } else {
    document.addEventListener("WeixinJSBridgeReady", pay, false);
    document.getElementById("wechat-only").hidden = false;
  }
})();
