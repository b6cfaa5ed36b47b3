// Gallery: the step slider moves over every stored step; a lightbox with arrow-key navigation.
(function () {
  "use strict";
  const slider = document.getElementById("step-slider");
  if (slider) {
    const steps = slider.dataset.steps.split(",").map(Number);
    const value = document.getElementById("step-value");
    const input = document.getElementById("step-input");
    slider.addEventListener("input", () => {
      value.textContent = steps[slider.value];
      input.value = steps[slider.value];
    });
    slider.addEventListener("change", () => document.getElementById("gallery-form").submit());
  }
  const figures = [...document.querySelectorAll(".gallery-grid figure")];
  const box = document.getElementById("lightbox");
  let index = 0;
  function show(i) {
    index = (i + figures.length) % figures.length;
    document.getElementById("lightbox-image").src = figures[index].dataset.image;
    document.getElementById("lightbox-caption").textContent =
      figures[index].dataset.caption + ` · ${index + 1}/${figures.length}`;
  }
  figures.forEach((figure, i) => figure.addEventListener("click", () => {
    box.hidden = false;
    show(i);
    box.focus();
  }));
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") box.hidden = true;
    if (e.key === "ArrowRight") show(index + 1);
    if (e.key === "ArrowLeft") show(index - 1);
  });
  box.addEventListener("click", (e) => { if (e.target === box) box.hidden = true; });
})();
