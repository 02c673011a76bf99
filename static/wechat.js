// WeChat JSAPI: inside WeChat, WeixinJSBridge opens the payment sheet. In sandbox
// mode (no WeChat) the parameters go to the sandbox's stand-in for the bridge. Either
// way the shopper then sees the status page: the front-end result is not authoritative.
(function () {
  var form = document.getElementById("jsapi");
  if (!form) return;
  var params = {};
  Array.prototype.forEach.call(form.querySelectorAll("input[type=hidden]"), function (i) {
    params[i.name] = i.value;
  });
  var done = function () { location.href = form.getAttribute("data-status"); };
  var bridge = form.getAttribute("data-bridge");
  function pay() {
    if (window.WeixinJSBridge) {
      window.WeixinJSBridge.invoke("getBrandWCPayRequest", params, done);
    } else if (bridge) {
      fetch(bridge, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params) })
        .then(done, done);
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
