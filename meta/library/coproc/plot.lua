---@meta coproc.plot
-- `require "coproc.plot"` (coproc/plot.so, PLplot): what Stats:save_memory_plot
-- draws with. Built when CMake's COPROC_PLOT is on.

---@class coproc.PlotSeries
---@field label string
---@field x number[] seconds
---@field mem number[] bytes
---@field cpu? number[] percent of one core
---@field total? boolean the thick black total line

---@class coproc.PlotNote
---@field x number
---@field text string

---@class coproc.PlotSpec
---@field title? string
---@field mem_label? string
---@field font_size? number
---@field width? integer
---@field height? integer
---@field include_cpu? boolean
---@field series coproc.PlotSeries[]
---@field notes? coproc.PlotNote[]

---A plot spec converted to C arrays once (`<close>` frees it).
---@class coproc.Plot
local Plot = {}

---The numbers the drawing uses (panels, axes, legend, labels), in image pixels.
---@return table layout
function Plot:layout() end

---Draw to a .png or .svg file; returns the layout.
---@param path string
---@return table layout
function Plot:draw(path) end

---Free the arrays (idempotent).
function Plot:close() end

---@class coproc.plot
local plot = {}

---@param spec coproc.PlotSpec
---@return coproc.Plot
function plot.new(spec) end

---The estimated width of `text` at `font_size` points, in pixels (what the layout uses).
---@param text string
---@param font_size number
---@return number
function plot.text_width(text, font_size) end

return plot
