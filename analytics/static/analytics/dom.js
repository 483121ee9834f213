/* The DOM helpers every dashboard page's script uses (loaded first by analytics/base.html).
   Text from the API is always set as text (textContent or a text node), never as HTML. */
(function () {
  "use strict";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
      else if (key === "style") node.style.cssText = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }
  function td(text, className) { return el("td", { text: text, className: className || "" }); }
  function num(text) { return td(text, "num"); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  // A table body that says why it has no rows, across all its columns.
  function message(tbody, columns, text) {
    clear(tbody);
    tbody.appendChild(el("tr", {}, [el("td", { colspan: String(columns), className: "muted wrap", text: text })]));
  }

  window.clickserverDom = { el: el, td: td, num: num, clear: clear, message: message };
})();
