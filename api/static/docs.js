// Draws /openapi.json with Swagger UI (served from the swagger-ui-bundle-v2 package, no CDN).
"use strict";
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    displayOperationId: true,
    persistAuthorization: false,
    tryItOutEnabled: false,
    // No badge from an outside validator: the page talks to this API only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    onComplete: () => { document.body.dataset.rendered = "true"; },
  });
});
